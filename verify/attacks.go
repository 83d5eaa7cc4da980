package verify

import (
	"context"
	"errors"
	"strings"

	"github.com/secretheap/secretheap/internal/attack"
	"github.com/secretheap/secretheap/internal/procfs"
)

// Bounds on what a live attack reads, so the suite stays within its time
// budget: ptrace reads one word per system call (~1 µs), so it keeps to the
// writable mappings (where data lives) and stops after ptraceBudget bytes.
const (
	maxMapping   = 1 << 30
	ptraceBudget = 64 << 20
)

// Attacks returns every attack in table order: the three live reads of
// internal/attack, gdb's gcore, and a kernel core dump of a crash.
func Attacks() []Attack {
	return []Attack{
		liveAttack("mem", "/proc/PID/mem", attack.ProcMem),
		liveAttack("vm_readv", "process_vm_readv", attack.ProcessVMReadv),
		liveAttack("ptrace", "ptrace PEEKDATA", attack.PtracePeek),
		{Short: "gcore", Name: "gcore (gdb)", Dump: true, Run: func(ctx context.Context, p Proc, r *Running) (*Image, error) {
			return Gcore(ctx, p.PID, r.Dir)
		}},
		{Short: "core", Name: "core dump (SIGABRT)", Kills: true, Dump: true, Run: func(_ context.Context, p Proc, r *Running) (*Image, error) {
			return KernelCore(p.PID, r.Dir, p.wait)
		}},
	}
}

// liveAttack reads every readable mapping of a running process with one of
// internal/attack's methods. A mapping the kernel refuses (memfd_secret
// pages: EIO or EFAULT) is recorded as unreadable; the rest of the process
// is still read.
func liveAttack(short, name string, m attack.Method) Attack {
	return Attack{Short: short, Name: name, Run: func(ctx context.Context, p Proc, _ *Running) (*Image, error) {
		return ReadLive(ctx, p.PID, m)
	}}
}

// ReadLive reads the memory of a live process with method m into an image.
func ReadLive(ctx context.Context, pid int, m attack.Method) (*Image, error) {
	maps, err := attack.Maps(pid)
	if err != nil {
		return nil, err
	}
	im := &Image{}
	var budget uint64 = 1 << 62
	if m == attack.PtracePeek {
		budget = ptraceBudget
	}
	for _, mp := range maps {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		vm := Mapping{Start: uint64(mp.Start), End: uint64(mp.End), Perms: mp.Perms, Name: mp.Name}
		if !mp.Readable() || strings.HasPrefix(mp.Name, "[v") || mp.Size() > maxMapping {
			continue
		}
		if m == attack.PtracePeek && (mp.Perms[1] != 'w' || uint64(mp.Size()) > budget) {
			continue
		}
		runs := [][2]uintptr{{mp.Start, mp.End}}
		if m == attack.PtracePeek {
			// One word per system call: peek only the pages that
			// hold data (present or swapped, from /proc/PID/pagemap).
			runs = residentRuns(pid, mp.Start, mp.End)
		}
		for _, run := range runs {
			data, err := attack.Read(pid, run[0], int(run[1]-run[0]), m)
			if len(data) > 0 {
				im.Segments = append(im.Segments, Segment{Mapping: vm, Addr: uint64(run[0]), Data: data})
				im.BytesRead += uint64(len(data))
				budget -= min(budget, uint64(len(data)))
			}
			if err != nil {
				var re *attack.ReadError
				if !errors.As(err, &re) {
					return nil, err
				}
				if re.Op == "attach" || re.Op == "open" || re.Op == "interrupt" || re.Op == "wait" {
					// The process refused the attacker outright
					// (e.g. PR_SET_DUMPABLE 0): an error of the
					// attack, not "nothing found".
					return nil, err
				}
				im.Unreadable = append(im.Unreadable, vm)
				break
			}
		}
	}
	return im, nil
}

// residentRuns returns the runs of pages in [start, end) that are present
// or swapped, with gaps of fewer than 16 pages merged (fewer ptrace
// attaches; peeking a missing page just reads zeros). If pagemap cannot be
// read, the whole range is one run.
func residentRuns(pid int, start, end uintptr) [][2]uintptr {
	const page = 4096
	whole := [][2]uintptr{{start, end}}
	pm, err := procfs.OpenPagemap(pid)
	if err != nil {
		return whole
	}
	defer pm.Close()
	es, err := pm.Entries(uint64(start), uint64(end))
	if err != nil {
		return whole
	}
	var runs [][2]uintptr
	for i, e := range es {
		if !e.Present() && !e.Swapped() {
			continue
		}
		a := start + uintptr(i)*page
		if l := len(runs); l > 0 && a-runs[l-1][1] < 16*page {
			runs[l-1][1] = a + page
		} else {
			runs = append(runs, [2]uintptr{a, a + page})
		}
	}
	return runs
}
