package main

import (
	"bytes"
	"encoding/json"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/internal/testutil"
	"github.com/secretheap/secretheap/secretmem"
	"golang.org/x/sys/unix"
)

// doctorInChild runs `secretheap doctor --json` in the current process (the
// child RunChild started, under its restrictions) and reports the exit
// status and the decoded report to the parent.
func doctorInChild(t *testing.T) {
	var out, errOut bytes.Buffer
	code := dispatch([]string{"doctor", "--json"}, &out, &errOut)
	var rep doctorReport
	require.NoError(t, json.Unmarshal(out.Bytes(), &rep), "doctor --json must print JSON: %s", out.String())
	testutil.Report("exit", code)
	testutil.Report("doctor", rep)
}

func findCheck(t *testing.T, rep doctorReport, name string) check {
	t.Helper()
	for _, c := range rep.Checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no %q check in %+v", name, rep)
	return check{}
}

// TestDoctorChild runs the doctor in children that meet the conditions users
// meet: an unprivileged user under container-sized RLIMIT_MEMLOCK, and
// memfd_secret refused by a seccomp filter. The unrestricted child is the
// control that shows the same checks can pass here.
func TestDoctorChild(t *testing.T) {
	testutil.RequireSecretMem(t)
	cases := []struct {
		name  string
		opts  testutil.ChildOptions
		ready bool
		exit  int
		// check name → wanted verdict
		want map[string]string
		// check name → substring of the detail
		detail map[string]string
	}{
		{
			name: "control root", opts: testutil.ChildOptions{}, ready: true, exit: 0,
			want: map[string]string{"memfd_secret": verdictOK, "memlock": verdictOK, "seccomp": verdictOK},
		},
		{
			name:  "nobody 8MiB",
			opts:  testutil.ChildOptions{Nobody: true, SetMemlock: true, Memlock: 8 << 20},
			ready: true, exit: 0,
			want:   map[string]string{"memfd_secret": verdictOK, "memlock": verdictOK},
			detail: map[string]string{"memlock": "4 chunks of 2 MiB"},
		},
		{
			name:  "nobody 64KiB",
			opts:  testutil.ChildOptions{Nobody: true, SetMemlock: true, Memlock: 64 << 10},
			ready: true, exit: 0,
			want:   map[string]string{"memfd_secret": verdictOK, "memlock": verdictWarn},
			detail: map[string]string{"memlock": "chunks shrink to 64 KiB"},
		},
		{
			name:  "nobody 16KiB",
			opts:  testutil.ChildOptions{Nobody: true, SetMemlock: true, Memlock: 16 << 10},
			ready: false, exit: 1,
			want:   map[string]string{"memlock": verdictFail},
			detail: map[string]string{"memlock": "no secret memory at all"},
		},
		{
			name:  "seccomp EPERM",
			opts:  testutil.ChildOptions{BlockMemfdSecret: syscall.EPERM},
			ready: false, exit: 1,
			want:   map[string]string{"memfd_secret": verdictFail, "seccomp": verdictFail},
			detail: map[string]string{"memfd_secret": "EPERM", "seccomp": "filter"},
		},
		{
			name:  "seccomp ENOSYS",
			opts:  testutil.ChildOptions{BlockMemfdSecret: syscall.ENOSYS},
			ready: false, exit: 1,
			want:   map[string]string{"memfd_secret": verdictFail, "seccomp": verdictFail},
			detail: map[string]string{"memfd_secret": "ENOSYS"},
		},
	}
	// On the new accounting model (the library's own detection) a finite
	// limit is a per-user budget without bypass: doctor can only warn that
	// other processes of the user may hold part of it, for root's default
	// limit as for nobody's 8 MiB. On the old model both pass (root: the
	// CAP_IPC_LOCK bypass; nobody: four whole chunks).
	if secretmem.Detect().Shared() {
		var limit unix.Rlimit
		require.NoError(t, unix.Getrlimit(unix.RLIMIT_MEMLOCK, &limit))
		for i := range cases {
			switch cases[i].name {
			case "control root":
				if limit.Cur != unix.RLIM_INFINITY {
					cases[i].want["memlock"] = verdictWarn
					cases[i].detail = map[string]string{"memlock": "budget shared by every process of this user (no CAP_IPC_LOCK bypass"}
				}
			case "nobody 8MiB":
				cases[i].want["memlock"] = verdictWarn
				cases[i].detail = map[string]string{"memlock": "the library could use at most 8 MiB, less what the user's other processes hold"}
			}
		}
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if testutil.InChild(t) {
				doctorInChild(t)
				return
			}
			res := testutil.RunChild(t, tc.opts)
			require.True(t, res.Clean(), res.Output)
			var code int
			var rep doctorReport
			require.True(t, res.Report("exit", &code), res.Output)
			require.True(t, res.Report("doctor", &rep), res.Output)
			assert.Equal(t, tc.exit, code)
			assert.Equal(t, tc.ready, rep.Ready)
			for name, v := range tc.want {
				c := findCheck(t, rep, name)
				assert.Equal(t, v, c.Verdict, "%s: %s", name, c.Detail)
				if v != verdictOK {
					assert.NotEmpty(t, c.Fix, "%s names no fix", name)
				}
			}
			for name, sub := range tc.detail {
				assert.Contains(t, findCheck(t, rep, name).Detail, sub)
			}
		})
	}
}
