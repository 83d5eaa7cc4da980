package alloc_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/secretheap/secretheap/alloc"
)

// Allocate secret memory from the default heap, use it as a []byte, free it
// (Free wipes it).
func Example() {
	b, err := alloc.Alloc(32)
	if err != nil {
		fmt.Println(err)
		return
	}
	copy(b, "correct horse battery staple")
	fmt.Println(len(b), string(b[:13]))
	if err := alloc.Free(b); err != nil {
		fmt.Println(err)
	}
	// Output: 32 correct horse
}

// A Secret never prints its bytes.
func ExampleSecret() {
	s, err := alloc.Wrap([]byte("hunter2")) // copies, then wipes the argument
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(s)
	fmt.Printf("%x %q\n", s, s)
	s.Destroy()
	fmt.Println(s.Len())
	// Output:
	// secretheap.Secret(7 bytes)
	// secretheap.Secret(7 bytes) secretheap.Secret(7 bytes)
	// 0
}

// Read a key file straight into secret memory.
func ExampleReadFile() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "key")
	_ = os.WriteFile(path, []byte("0123456789abcdef0123456789abcdef"), 0o600)

	key, err := alloc.ReadFile(path)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer key.Destroy()
	fmt.Println(key.Len(), string(key.Bytes()[:4]))
	// Output: 32 0123
}
