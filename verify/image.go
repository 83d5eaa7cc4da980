package verify

import (
	"bytes"
	"strings"

	"github.com/secretheap/secretheap/internal/attack"
)

// Mapping is one line of /proc/PID/maps.
type Mapping struct {
	Start, End uint64
	Perms      string // "rw-p"
	Name       string // path, [heap], [stack], or "" for anonymous memory
}

// Label names the mapping the way the report does: its name, or "anon".
func (m Mapping) Label() string {
	switch {
	case m.Name == "":
		return "anon"
	case strings.HasPrefix(m.Name, "/secretmem"):
		return "secretmem"
	default:
		return m.Name
	}
}

// ReadMaps reads /proc/PID/maps (through internal/attack's parser).
func ReadMaps(pid int) ([]Mapping, error) {
	ms, err := attack.Maps(pid)
	if err != nil {
		return nil, err
	}
	out := make([]Mapping, len(ms))
	for i, m := range ms {
		out[i] = Mapping{Start: uint64(m.Start), End: uint64(m.End), Perms: m.Perms, Name: m.Name}
	}
	return out, nil
}

// Segment is the part of a mapping an attack managed to read.
type Segment struct {
	Mapping Mapping
	Addr    uint64 // address of Data[0]
	Data    []byte
}

// Image is what one attack read from one process.
type Image struct {
	Segments   []Segment
	BytesRead  uint64
	Unreadable []Mapping // mappings (or parts) the attack was refused
	// Defect is a fault of the library the attack met on the way (the
	// suite fails on it even if nothing was found).
	Defect string
}

// Hit is one needle found in one image.
type Hit struct {
	Needle  Needle
	Match   string // full, head or tail
	Mapping string // mapping label
	Addr    uint64
}

// Search looks for every needle (whole, then its head and tail fragments)
// in every segment. One hit per needle and mapping is reported: the table
// needs where a secret is, not how many copies.
func (im *Image) Search(needles []Needle) []Hit {
	var hits []Hit
	for _, n := range needles {
		seen := map[string]bool{}
		for _, frag := range n.fragments() {
			for _, seg := range im.Segments {
				label := seg.Mapping.Label()
				if seen[label] {
					continue
				}
				if i := bytes.Index(seg.Data, frag.b); i >= 0 {
					seen[label] = true
					hits = append(hits, Hit{Needle: n, Match: frag.tag, Mapping: label, Addr: seg.Addr + uint64(i)})
				}
			}
		}
	}
	return hits
}
