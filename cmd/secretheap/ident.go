package main

// What a process has loaded, learnt from its own memory. Every shared object
// and executable is mapped with its ELF header at the start of its first
// mapping (file offset 0); its dynamic section, symbol table and hash table
// are mapped too, because ld.so needs them. Reading them through
// /proc/PID/mem tells inspect which loaded object is libsecretheap.so (it
// exports secretheap_ident, cshim/stats.c) and which one is OpenSSL (it
// exports CRYPTO_set_mem_functions: a libcrypto.so, or a program such as
// node with OpenSSL linked in), whatever the files are called and whether
// or not they were stripped. No file is opened: a path in /proc/PID/maps is
// only a name the process may have planted.

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/secretheap/secretheap/internal/procfs"
)

const (
	// identSymbol is the library's exported struct sh_ident.
	identSymbol = "secretheap_ident"
	// versionSymbol is exported by every libsecretheap.so, old or new.
	versionSymbol = "secretheap_version"
	// identMagic opens it.
	identMagic = "secretheap-ident"
	// opensslSymbol is exported by every OpenSSL the library can hook.
	opensslSymbol = "CRYPTO_set_mem_functions"
	// maxObjects bounds how many loaded objects inspect examines.
	maxObjects = 4096
	// maxChain bounds a hash-chain walk (a hostile process controls the table).
	maxChain = 1 << 16
)

// memReader reads a process's memory through an open /proc/PID/mem.
type memReader struct{ f *os.File }

func (r memReader) read(addr uint64, n int) ([]byte, error) {
	b := make([]byte, n)
	k, err := r.f.ReadAt(b, int64(addr))
	if k == n {
		return b, nil
	}
	if err == nil {
		err = errors.New("short read")
	}
	return nil, fmt.Errorf("read %d bytes at %#x: %w", n, addr, err)
}

func (r memReader) u32(addr uint64) (uint32, error) {
	b, err := r.read(addr, 4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

// loadedObject is one ELF object as its memory shows it.
type loadedObject struct {
	Path  string // the name maps gives its first mapping (for people only)
	Start uint64 // where its ELF header is mapped
	bias  uint64 // load bias: symbol values are relative to it
	r     memReader
	// from the dynamic section (addresses in the process)
	strtab, strsz, symtab, gnuHash, sysvHash uint64
}

// openObject reads the ELF and program headers and the dynamic section of
// the object whose first mapping starts at start.
func openObject(r memReader, path string, start uint64) (*loadedObject, error) {
	hdr, err := r.read(start, 64)
	if err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(hdr, []byte(elf.ELFMAG)) || elf.Class(hdr[elf.EI_CLASS]) != elf.ELFCLASS64 ||
		elf.Data(hdr[elf.EI_DATA]) != elf.ELFDATA2LSB {
		return nil, errors.New("not a 64-bit little-endian ELF image")
	}
	le := binary.LittleEndian
	phoff, phentsize, phnum := le.Uint64(hdr[32:]), le.Uint16(hdr[54:]), le.Uint16(hdr[56:])
	if phentsize != 56 || phnum == 0 || phnum > 128 || phoff > 1<<20 {
		return nil, errors.New("implausible program headers")
	}
	ph, err := r.read(start+phoff, int(phentsize)*int(phnum))
	if err != nil {
		return nil, err
	}
	var firstLoad, dynAddr, dynSize uint64
	haveLoad := false
	for i := 0; i < int(phnum); i++ {
		p := ph[i*56:]
		switch elf.ProgType(le.Uint32(p)) {
		case elf.PT_LOAD:
			if va := le.Uint64(p[16:]); !haveLoad || va < firstLoad {
				firstLoad, haveLoad = va, true
			}
		case elf.PT_DYNAMIC:
			dynAddr, dynSize = le.Uint64(p[16:]), le.Uint64(p[40:])
		}
	}
	if !haveLoad || dynSize == 0 {
		return nil, errors.New("no dynamic section")
	}
	o := &loadedObject{Path: path, Start: start, bias: start - firstLoad&^0xfff, r: r}
	dynSize = min(dynSize, 64<<10)
	dyn, err := r.read(o.bias+dynAddr, int(dynSize&^15))
	if err != nil {
		return nil, err
	}
	for i := 0; i+16 <= len(dyn); i += 16 {
		tag, val := elf.DynTag(le.Uint64(dyn[i:])), le.Uint64(dyn[i+8:])
		if tag == elf.DT_NULL {
			break
		}
		switch tag {
		case elf.DT_STRTAB:
			o.strtab = o.addr(val)
		case elf.DT_STRSZ:
			o.strsz = val
		case elf.DT_SYMTAB:
			o.symtab = o.addr(val)
		case elf.DT_GNU_HASH:
			o.gnuHash = o.addr(val)
		case elf.DT_HASH:
			o.sysvHash = o.addr(val)
		}
	}
	if o.strtab == 0 || o.symtab == 0 || (o.gnuHash == 0 && o.sysvHash == 0) {
		return nil, errors.New("no dynamic symbol table")
	}
	return o, nil
}

// addr turns a d_ptr of the dynamic section into an address: glibc's ld.so
// relocates them in place on x86-64, so a value already inside the object's
// range is absolute; an unrelocated one (ld.so still at work, or another
// loader) is relative to the load bias.
func (o *loadedObject) addr(v uint64) uint64 {
	if o.bias != 0 && v < o.bias {
		return v + o.bias
	}
	return v
}

// lookup returns the address of the defined dynamic symbol name, and false
// when the object does not export it.
func (o *loadedObject) lookup(name string) (addr, size uint64, ok bool, err error) {
	if o.gnuHash != 0 {
		return o.lookupGNU(name)
	}
	return o.lookupSysV(name)
}

// symbol reads symbol idx and reports whether it is name, defined.
func (o *loadedObject) symbol(idx uint64, name string) (addr, size uint64, ok bool, err error) {
	s, err := o.r.read(o.symtab+idx*24, 24)
	if err != nil {
		return 0, 0, false, err
	}
	le := binary.LittleEndian
	nameOff, shndx := uint64(le.Uint32(s)), le.Uint16(s[6:])
	if shndx == uint16(elf.SHN_UNDEF) || nameOff+uint64(len(name)) >= o.strsz {
		return 0, 0, false, nil
	}
	n, err := o.r.read(o.strtab+nameOff, len(name)+1)
	if err != nil {
		return 0, 0, false, err
	}
	if string(n) != name+"\x00" {
		return 0, 0, false, nil
	}
	return o.bias + le.Uint64(s[8:]), le.Uint64(s[16:]), true, nil
}

func (o *loadedObject) lookupGNU(name string) (uint64, uint64, bool, error) {
	h := uint32(5381)
	for _, c := range []byte(name) {
		h = h*33 + uint32(c)
	}
	hdr, err := o.r.read(o.gnuHash, 16)
	if err != nil {
		return 0, 0, false, err
	}
	le := binary.LittleEndian
	nbuckets, symoffset, bloomSize := le.Uint32(hdr), le.Uint32(hdr[4:]), le.Uint32(hdr[8:])
	if nbuckets == 0 {
		return 0, 0, false, nil
	}
	buckets := o.gnuHash + 16 + uint64(bloomSize)*8
	idx, err := o.r.u32(buckets + uint64(h%nbuckets)*4)
	if err != nil || idx < symoffset {
		return 0, 0, false, err
	}
	chain := buckets + uint64(nbuckets)*4
	for i := 0; i < maxChain; i, idx = i+1, idx+1 {
		c, err := o.r.u32(chain + uint64(idx-symoffset)*4)
		if err != nil {
			return 0, 0, false, err
		}
		if c|1 == h|1 {
			if a, sz, ok, err := o.symbol(uint64(idx), name); ok || err != nil {
				return a, sz, ok, err
			}
		}
		if c&1 != 0 {
			break
		}
	}
	return 0, 0, false, nil
}

func (o *loadedObject) lookupSysV(name string) (uint64, uint64, bool, error) {
	var h uint32
	for _, c := range []byte(name) {
		h = h<<4 + uint32(c)
		g := h & 0xf0000000
		h ^= g >> 24
		h &^= g
	}
	nbucket, err := o.r.u32(o.sysvHash)
	if err != nil || nbucket == 0 {
		return 0, 0, false, err
	}
	nchain, err := o.r.u32(o.sysvHash + 4)
	if err != nil {
		return 0, 0, false, err
	}
	idx, err := o.r.u32(o.sysvHash + 8 + uint64(h%nbucket)*4)
	chain := o.sysvHash + 8 + uint64(nbucket)*4
	for i := 0; err == nil && idx != 0 && idx < nchain && i < maxChain; i++ {
		if a, sz, ok, err := o.symbol(uint64(idx), name); ok || err != nil {
			return a, sz, ok, err
		}
		idx, err = o.r.u32(chain + uint64(idx)*4)
	}
	return 0, 0, false, err
}

// libraryIdent is what the library's secretheap_ident says.
type libraryIdent struct {
	Version  string
	counters []uint64 // addresses of the live counters, in liveCounters order
}

// readIdent reads and checks the secretheap_ident at addr.
func readIdent(r memReader, addr, size uint64) (libraryIdent, error) {
	if size < 40 || size > 4096 {
		return libraryIdent{}, fmt.Errorf("%s has size %d", identSymbol, size)
	}
	b, err := r.read(addr, int(size))
	if err != nil {
		return libraryIdent{}, err
	}
	if string(b[:16]) != identMagic {
		return libraryIdent{}, fmt.Errorf("%s does not start with %q", identSymbol, identMagic)
	}
	id := libraryIdent{Version: string(bytes.TrimRight(b[16:32], "\x00"))}
	n := binary.LittleEndian.Uint64(b[32:])
	for i := uint64(0); i < n && i < uint64(len(liveCounters)) && 40+8*i+8 <= uint64(len(b)); i++ {
		id.counters = append(id.counters, binary.LittleEndian.Uint64(b[40+8*i:]))
	}
	return id, nil
}

// objectReport is one loaded object inspect found something in.
type objectReport struct {
	Path string
	obj  *loadedObject
}

// findObjects examines the objects mapped in maps (each one's mapping at
// file offset 0) and returns the library (with its ident) and the objects
// that export OpenSSL's allocator hook. objErr says why none could be read
// (the process's memory is unreadable) when every attempt failed that way.
func findObjects(r memReader, maps []procfs.Mapping) (lib *objectReport, ident libraryIdent, identErr error, openssl []objectReport, memErr error) {
	seen := 0
	for _, m := range maps {
		if m.Offset != 0 || !strings.HasPrefix(m.Path, "/") || m.Secretmem() || !strings.HasPrefix(m.Perms, "r") {
			continue
		}
		if seen++; seen > maxObjects {
			break
		}
		o, err := openObject(r, m.Path, m.Start)
		if err != nil {
			if errors.Is(err, os.ErrPermission) || errors.Is(err, errMemDenied) {
				memErr = err
			}
			continue
		}
		if _, _, ok, err := o.lookup(versionSymbol); err == nil && ok {
			// The library (it exports CRYPTO_set_mem_functions too: it is
			// not OpenSSL). One older than secretheap_ident has no ident.
			if lib == nil {
				lib = &objectReport{Path: m.Path, obj: o}
				if a, sz, ok, err := o.lookup(identSymbol); err != nil || !ok {
					identErr = fmt.Errorf("it exports no %s (a libsecretheap.so older than this command)", identSymbol)
				} else {
					ident, identErr = readIdent(r, a, sz)
				}
			}
			continue
		}
		if _, _, ok, err := o.lookup(opensslSymbol); err == nil && ok {
			openssl = append(openssl, objectReport{Path: m.Path, obj: o})
		}
	}
	return lib, ident, identErr, openssl, memErr
}

// errMemDenied marks a /proc/PID/mem that could not be opened.
var errMemDenied = errors.New("memory unreadable")
