package pmdcache_test

import (
	"fmt"
	"unsafe"

	"github.com/secretheap/secretheap/pmdcache"
)

// A chunk of secret memory: commit what you use, find the chunk from any
// address inside it, give it back for reuse.
func Example() {
	c, err := pmdcache.New(pmdcache.Config{}) // auto: memfd_secret, else locked (with one warning)
	if err != nil {
		panic(err)
	}
	defer c.Close()

	ch, err := c.Get()
	if err != nil {
		panic(err) // e.g. ErrExhausted under a tiny RLIMIT_MEMLOCK
	}
	if err := ch.Commit(100); err != nil { // the first run: one OS page
		panic(err)
	}
	key := unsafe.Slice((*byte)(ch.Base()), 32)
	copy(key, "never on the Go heap")

	fmt.Println(ch.Size(), ch.Committed())
	fmt.Println(c.Lookup(uintptr(unsafe.Pointer(&key[5]))) == ch)

	clear(key) // chunks go back wiped
	c.Put(ch)
	again, _ := c.Get()
	fmt.Println(again == ch, again.Committed())
	// Output:
	// 2097152 4096
	// true
	// true 4096
}
