package attack_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"regexp"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/secretheap/secretheap/internal/attack"
	"github.com/secretheap/secretheap/internal/launch"
)

const targetEnv = "SECRETHEAP_ATTACK_TARGET"

// TestTarget is the victim process: when started by startTarget it puts a
// random needle on its Go heap and maps a PROT_NONE page, prints both
// addresses and waits for its standard input to close.
func TestTarget(t *testing.T) {
	if os.Getenv(targetEnv) != "1" {
		t.Skip("helper process for TestAttacks")
	}
	needle := make([]byte, 32)
	_, err := unix.Getrandom(needle, 0)
	require.NoError(t, err)
	none, err := unix.MmapPtr(-1, 0, nil, 4096, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	require.NoError(t, err)
	fmt.Printf("TARGET %d %x %s %x\n", os.Getpid(), &needle[0], hex.EncodeToString(needle), uintptr(none))
	_, _ = io.Copy(io.Discard, os.Stdin)
	runtime.KeepAlive(needle)
}

type target struct {
	pid         int
	addr, guard uintptr
	needle      []byte
}

func startTarget(t *testing.T) target {
	p, err := launch.Start(context.Background(), launch.Options{
		Env:   []string{targetEnv + "=1", "GORACE=atexit_sleep_ms=0"},
		Ready: regexp.MustCompile(`^TARGET (.*)$`), Role: "target",
	}, os.Args[0], "-test.run=^TestTarget$")
	require.NoError(t, err)
	t.Cleanup(p.Stop)
	var tg target
	var hx string
	_, err = fmt.Sscanf(p.Ready, "%d %x %s %x", &tg.pid, &tg.addr, &hx, &tg.guard)
	require.NoError(t, err)
	tg.needle, err = hex.DecodeString(hx)
	require.NoError(t, err)
	return tg
}

// TestAttacks reads another process's Go heap with every method (it works:
// these are real attacks), and checks that a PROT_NONE page and an unmapped
// address give a *ReadError with the errno — the same failure the tests of
// secret memory expect, which these controls show is not a given.
func TestAttacks(t *testing.T) {
	tg := startTarget(t)
	for _, m := range attack.Methods() {
		t.Run(m.String(), func(t *testing.T) {
			b, err := attack.Read(tg.pid, tg.addr, len(tg.needle), m)
			require.NoError(t, err)
			assert.Equal(t, tg.needle, b, "read the heap of another process")

			_, err = attack.Read(tg.pid, 0x1000, 16, m)
			require.Error(t, err, "nothing is mapped at 0x1000")
			var re *attack.ReadError
			require.ErrorAs(t, err, &re)
			assert.Equal(t, map[attack.Method]unix.Errno{attack.ProcMem: unix.EIO, attack.ProcessVMReadv: unix.EFAULT,
				attack.PtracePeek: unix.EIO}[m], re.Errno, err.Error())
			assert.ErrorIs(t, err, re.Errno)
			assert.Contains(t, err.Error(), m.Describe())

			// A PROT_NONE page is no protection: /proc/PID/mem and ptrace
			// read with FOLL_FORCE, like a debugger; only process_vm_readv
			// honours the protection.
			b, err = attack.Read(tg.pid, tg.guard, 16, m)
			if m == attack.ProcessVMReadv {
				require.ErrorIs(t, err, unix.EFAULT)
			} else {
				require.NoError(t, err)
				assert.Equal(t, make([]byte, 16), b)
			}
		})
	}
	for _, m := range []attack.Method{attack.ProcMem, attack.ProcessVMReadv} {
		t.Run("scan-"+m.String(), func(t *testing.T) {
			// The race detector maps ~400 MiB of untouched memory; reading it
			// all through /proc takes seconds and holds no needle.
			opt := attack.ScanOptions{MaxMapping: 64 << 20}
			res, err := attack.ScanWith(tg.pid, tg.needle, m, opt)
			require.NoError(t, err)
			require.NotEmpty(t, res.Hits)
			found := false
			for _, h := range res.Hits {
				found = found || h.Addr == tg.addr
				assert.True(t, h.Addr >= h.Mapping.Start && h.Addr < h.Mapping.End)
			}
			assert.True(t, found, "the needle's own address is among the hits")
			missing := append([]byte{}, tg.needle...)
			missing[0] ^= 0xff
			missing[31] ^= 0xff
			// Control: bytes the target never held are not found. (Our own
			// copy of them lives in this process, not the target.)
			res, err = attack.ScanWith(tg.pid, missing, m, opt)
			require.NoError(t, err)
			assert.Empty(t, res.Hits)
		})
	}
	t.Run("no such process", func(t *testing.T) {
		for _, m := range attack.Methods() {
			_, err := attack.Read(1<<30, tg.addr, 8, m)
			require.Error(t, err)
		}
	})
}
