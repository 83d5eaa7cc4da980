package main

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/secretheap/secretheap/secretmem"
)

func TestKernelVersion(t *testing.T) {
	for _, tc := range []struct {
		in           string
		major, minor int
		ok           bool
	}{
		{"6.18.44-fc-v669", 6, 18, true},
		{"5.14.0-427.el9.x86_64", 5, 14, true},
		{"6.5-rc1", 6, 5, true},
		{"4.19", 4, 19, true},
		{"garbage", 0, 0, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			maj, min, ok := kernelVersion(tc.in)
			assert.Equal(t, tc.ok, ok)
			if ok {
				assert.Equal(t, [2]int{tc.major, tc.minor}, [2]int{maj, min})
			}
		})
	}
}

func TestCheckKernel(t *testing.T) {
	for _, tc := range []struct{ release, verdict string }{
		{"4.19.0", verdictFail},
		{"5.13.9", verdictFail},
		{"5.14.0", verdictOK},
		{"6.1.0-18-amd64", verdictOK},
		{"6.18.44", verdictOK},
		{"x", verdictWarn},
	} {
		t.Run(tc.release, func(t *testing.T) {
			c := checkKernel(tc.release)
			assert.Equal(t, tc.verdict, c.Verdict, c.Detail)
			if tc.verdict == verdictFail {
				assert.NotEmpty(t, c.Fix)
			}
		})
	}
}

func TestSecretCapacity(t *testing.T) {
	for _, tc := range []struct {
		headroom             uint64
		chunks, chunk, total uint64
	}{
		{0, 0, 0, 0},
		{63 * kib, 0, 0, 0},
		{64 * kib, 1, 64 * kib, 64 * kib},
		{100 * kib, 1, 64 * kib, 64 * kib},
		{1 * mib, 1, 1 * mib, 1 * mib},
		{2 * mib, 1, 2 * mib, 2 * mib},
		{8 * mib, 4, 2 * mib, 8 * mib},
		{9 * mib, 4, 2 * mib, 8 * mib},
	} {
		t.Run(formatBytes(tc.headroom), func(t *testing.T) {
			n, c, tot := secretCapacity(tc.headroom)
			assert.Equal(t, [3]uint64{tc.chunks, tc.chunk, tc.total}, [3]uint64{n, c, tot})
		})
	}
}

func TestCheckMemlock(t *testing.T) {
	noCap := map[string]string{"CapEff": "0000000000000000"}
	root := map[string]string{"CapEff": "000001fffeffffff"}
	for _, tc := range []struct {
		name    string
		m       secretmem.Memlock
		status  map[string]string
		verdict string
		detail  string
	}{
		{"root", secretmem.Memlock{Limit: 8 * mib, Unlimited: true}, root, verdictOK, "CAP_IPC_LOCK"},
		{"infinity", secretmem.Memlock{Limit: 1<<64 - 1, Unlimited: true}, noCap, verdictOK, "unlimited"},
		{"default 8 MiB", secretmem.Memlock{Limit: 8 * mib}, noCap, verdictOK, "4 chunks of 2 MiB"},
		{"8 MiB half used", secretmem.Memlock{Limit: 8 * mib, Locked: 5 * mib}, noCap, verdictOK, "1 chunks of 2 MiB"},
		{"container 64 KiB", secretmem.Memlock{Limit: 64 * kib}, noCap, verdictWarn, "chunks shrink to 64 KiB"},
		{"1 MiB", secretmem.Memlock{Limit: 1 * mib}, noCap, verdictWarn, "chunks shrink to 1 MiB"},
		{"16 KiB", secretmem.Memlock{Limit: 16 * kib}, noCap, verdictFail, "below the 64 KiB minimum"},
		{"all used", secretmem.Memlock{Limit: 64 * kib, Locked: 64 * kib}, noCap, verdictFail, "no secret memory at all"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := checkMemlock(secretmem.Kernel{Model: secretmem.ModelOld}, tc.m, nil, tc.status)
			assert.Equal(t, tc.verdict, c.Verdict, c.Detail)
			assert.Contains(t, c.Detail, tc.detail)
			if tc.verdict != verdictOK {
				assert.Contains(t, c.Fix, "LimitMEMLOCK=")
				assert.Contains(t, c.Fix, "--ulimit memlock=")
			}
		})
	}
	c := checkMemlock(secretmem.Kernel{}, secretmem.Memlock{}, fmt.Errorf("boom"), nil)
	assert.Equal(t, verdictWarn, c.Verdict)
}

// On the new model doctor never promises a bypass: root's 8 MiB is a budget
// shared by the user's processes, and the fix is named.
func TestCheckMemlockNewModel(t *testing.T) {
	root := map[string]string{"CapEff": "000001fffeffffff"}
	k := secretmem.Kernel{Model: secretmem.ModelNew, MemlockLimit: 8 * mib, CapIPCLock: true}
	c := checkMemlock(k, secretmem.Memlock{Limit: 8 * mib, Unlimited: true}, nil, root)
	assert.Equal(t, verdictWarn, c.Verdict, c.Detail)
	assert.NotContains(t, c.Detail, "bypasses")
	assert.Contains(t, c.Detail, "shared by every process of this user")
	assert.Contains(t, c.Detail, "at most 8 MiB")
	assert.Contains(t, c.Fix, "LimitMEMLOCK=")
	assert.Contains(t, c.Fix, "limits.conf")
	assert.Contains(t, c.Fix, "--ulimit memlock=")
	assert.Equal(t, uint64(8*mib), c.Data["allows_bytes"])
	c = checkMemlock(k, secretmem.Memlock{Limit: 16 * kib}, nil, root)
	assert.Equal(t, verdictFail, c.Verdict, c.Detail)
	c = checkMemlock(k, secretmem.Memlock{Limit: unix.RLIM_INFINITY, Unlimited: true}, nil, root)
	assert.Equal(t, verdictOK, c.Verdict, c.Detail)
	// The same as root on the old model: the bypass is real there.
	c = checkMemlock(secretmem.Kernel{Model: secretmem.ModelOld, CapIPCLock: true}, secretmem.Memlock{Limit: 8 * mib, Unlimited: true}, nil, root)
	assert.Equal(t, verdictOK, c.Verdict)
	assert.Contains(t, c.Detail, "CAP_IPC_LOCK bypasses")

	for _, m := range []secretmem.Model{secretmem.ModelOld, secretmem.ModelNew, secretmem.ModelUnknown} {
		c := checkModel(secretmem.Kernel{Model: m})
		assert.Contains(t, c.Detail, map[secretmem.Model]string{secretmem.ModelOld: "old model", secretmem.ModelNew: "new model", secretmem.ModelUnknown: "could not tell"}[m])
	}
}

// probeErr makes the error secretmem.Probe returns for errno en, by asking
// secretmem itself where it can: the test needs the real type, not a copy.
func probeErr(en unix.Errno) error {
	return &secretmem.ProbeError{Errno: en, Op: "memfd_secret", Reason: "r", Fix: "f"}
}

func TestCheckProbe(t *testing.T) {
	c := checkProbe(nil)
	assert.Equal(t, verdictOK, c.Verdict)

	c = checkProbe(probeErr(unix.ENOSYS))
	assert.Equal(t, verdictFail, c.Verdict)
	assert.Contains(t, c.Detail, "ENOSYS")
	assert.Equal(t, "f", c.Fix)
	assert.Equal(t, "ENOSYS", c.Data["errno"])

	c = checkProbe(fmt.Errorf("odd"))
	assert.Equal(t, verdictFail, c.Verdict)
	assert.Contains(t, c.Detail, "odd")
}

func TestCheckEnableParam(t *testing.T) {
	for _, tc := range []struct {
		name, param string
		probe       error
		verdict     string
	}{
		{"on", "Y", nil, verdictOK},
		{"off", "N", probeErr(unix.ENOSYS), verdictFail},
		{"absent, works", "", nil, verdictOK},
		{"absent, ENOSYS", "", probeErr(unix.ENOSYS), verdictWarn},
		{"root only, works", paramUnreadable, nil, verdictOK},
		{"root only, ENOSYS", paramUnreadable, probeErr(unix.ENOSYS), verdictWarn},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := checkEnableParam(tc.param, tc.probe)
			assert.Equal(t, tc.verdict, c.Verdict, c.Detail)
			if tc.param == "N" {
				assert.Contains(t, c.Fix, "secretmem.enable=1")
			}
		})
	}
}

func TestCheckSeccomp(t *testing.T) {
	for _, tc := range []struct {
		name    string
		status  map[string]string
		probe   error
		verdict string
	}{
		{"none", map[string]string{"Seccomp": "0", "Seccomp_filters": "0"}, nil, verdictOK},
		{"filter allows", map[string]string{"Seccomp": "2", "Seccomp_filters": "1"}, nil, verdictOK},
		{"filter refuses", map[string]string{"Seccomp": "2", "Seccomp_filters": "1"}, probeErr(unix.EPERM), verdictFail},
		{"filter gives ENOSYS", map[string]string{"Seccomp": "2", "Seccomp_filters": "1"}, probeErr(unix.ENOSYS), verdictFail},
		{"no filter, kernel ENOSYS", map[string]string{"Seccomp": "0"}, probeErr(unix.ENOSYS), verdictOK},
		{"EPERM without filter", map[string]string{"Seccomp": "0"}, probeErr(unix.EPERM), verdictFail},
		{"unreadable", map[string]string{}, nil, verdictWarn},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := checkSeccomp(tc.status, tc.probe)
			assert.Equal(t, tc.verdict, c.Verdict, c.Detail)
			if tc.verdict == verdictFail {
				assert.Contains(t, c.Fix, "seccomp")
			}
		})
	}
}

func TestCheckHibernation(t *testing.T) {
	assert.Equal(t, verdictWarn, checkHibernation("freeze mem disk").Verdict)
	assert.Equal(t, verdictOK, checkHibernation("freeze mem").Verdict)
	assert.Equal(t, verdictOK, checkHibernation("").Verdict)
	assert.Equal(t, verdictOK, checkHibernation("diskless").Verdict, "a word, not a substring")
}

func TestFindLibcrypto(t *testing.T) {
	const cache = `2 libs found in cache ` + "`/etc/ld.so.cache'" + `
	libcrypto.so.3 (libc6,x86-64) => /nonexistent/libcrypto.so.3
	libcrypto.so.1.1 (libc6,x86-64) => /nonexistent/libcrypto.so.1.1
`
	// Entries whose file is missing are skipped; the known directories are
	// the fallback, so the answer on this machine is its real libcrypto.
	path, soname := findLibcrypto([]byte(cache))
	assert.NotContains(t, path, "/nonexistent/")
	if path != "" {
		assert.Contains(t, libcryptoSonames, soname)
	}
}

func TestCheckOpenSSL(t *testing.T) {
	assert.Equal(t, verdictWarn, checkOpenSSL(opensslInfo{}).Verdict)
	c := checkOpenSSL(opensslInfo{Libcrypto: "/lib/libcrypto.so.3", Soname: "libcrypto.so.3", Version: "OpenSSL 3.0.19"})
	assert.Equal(t, verdictOK, c.Verdict)
	assert.Contains(t, c.Detail, "OpenSSL 3.0.19")
}

func TestCheckHook(t *testing.T) {
	for _, tc := range []struct {
		name    string
		h       hookResult
		verdict string
	}{
		{"no library", hookResult{Skipped: "not built"}, verdictWarn},
		{"hooked", hookResult{Library: "/x/libsecretheap.so", Hooked: "1", SecureInterposed: "yes"}, verdictOK},
		// Mode secure falls back to the general hooks for such a libcrypto.
		{"hooked, secure bound inside", hookResult{Library: "/x/libsecretheap.so", Hooked: "1", SecureInterposed: "bound-inside-libcrypto"}, verdictOK},
		{"not hooked", hookResult{Library: "/x/libsecretheap.so", Hooked: "0"}, verdictFail},
		{"refused", hookResult{Library: "/x/libsecretheap.so", Hooked: "2"}, verdictFail},
		{"probe failed", hookResult{Library: "/x/libsecretheap.so", Err: fmt.Errorf("exit 1")}, verdictFail},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.verdict, checkHook(tc.h).Verdict)
		})
	}
}

func TestDiagnoseReady(t *testing.T) {
	good := doctorEnv{
		release:     "6.18.0",
		enableParam: "Y",
		status:      map[string]string{"Seccomp": "0", "CapEff": "0"},
		memlock:     secretmem.Memlock{Limit: 8 * mib},
		kernel:      secretmem.Kernel{Model: secretmem.ModelOld, MemlockLimit: 8 * mib},
		openssl:     opensslInfo{Libcrypto: "/l/libcrypto.so.3", Soname: "libcrypto.so.3"},
		hook:        hookResult{Library: "/x", Hooked: "1"},
	}
	rep := diagnose(good)
	assert.True(t, rep.Ready)
	require.Len(t, rep.Checks, 9)
	for _, c := range rep.Checks {
		assert.Equal(t, verdictOK, c.Verdict, c.Name+": "+c.Detail)
	}

	bad := good
	bad.probeErr = probeErr(unix.EPERM)
	bad.status = map[string]string{"Seccomp": "2", "Seccomp_filters": "1", "CapEff": "0"}
	rep = diagnose(bad)
	assert.False(t, rep.Ready, "EPERM from a seccomp filter is not ready")
}
