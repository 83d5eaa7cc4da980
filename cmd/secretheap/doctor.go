package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/secretheap/secretheap/internal/ldpreload"
	"github.com/secretheap/secretheap/internal/procfs"
	"github.com/secretheap/secretheap/secretmem"
)

// Verdicts, from best to worst. Only FAIL makes the machine "not ready":
// WARN names something that works but limits the protection.
const (
	verdictOK   = "OK"
	verdictWarn = "WARN"
	verdictFail = "FAIL"
)

const (
	kib = 1 << 10
	mib = 1 << 20
	// chunkSize is pmdcache's chunk: one memfd_secret file of 2 MiB.
	chunkSize = 2 * mib
	// minChunk is the smallest chunk pmdcache shrinks to when RLIMIT_MEMLOCK
	// headroom is below chunkSize; below it the heap cannot map anything.
	minChunk = 64 * kib
	// tlsProcessPeak is what one s_server/s_client process has live at its
	// peak (DESIGN.md: ≈1.1 MB) — the memlock a TLS program needs when every
	// OpenSSL allocation goes to secret memory (SECRETHEAP_OPENSSL=all).
	tlsProcessPeak = 1100 * kib
)

// check is one line of the doctor's report.
type check struct {
	Name    string         `json:"name"`
	Verdict string         `json:"verdict"`
	Detail  string         `json:"detail"`
	Fix     string         `json:"fix,omitempty"`
	Data    map[string]any `json:"data,omitempty"`
}

// doctorReport is doctor's --json output.
type doctorReport struct {
	Ready  bool    `json:"ready"`
	Checks []check `json:"checks"`
}

// doctorEnv is what the checks read from the machine, gathered once so tests
// can run the checks against a process whose conditions they set up (a child
// with a low RLIMIT_MEMLOCK, or with a seccomp filter refusing memfd_secret).
type doctorEnv struct {
	release     string            // uname -r
	probeErr    error             // secretmem.Probe()
	enableParam string            // /sys/module/secretmem/parameters/enable, "" if absent
	status      map[string]string // /proc/self/status
	memlock     secretmem.Memlock
	memlockErr  error
	kernel      secretmem.Kernel // accounting model, detected by behaviour
	powerState  string           // /sys/power/state, "" if absent
	openssl     opensslInfo
	hook        hookResult
}

func runDoctor(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("doctor", "doctor [--json]",
		"Checks whether this machine can give programs secret memory (memfd_secret) and\n"+
			"whether libsecretheap.so can hook the system's OpenSSL. One verdict per line,\n"+
			"OK, WARN or FAIL, with the fix for each problem. Exits 0 when ready (no FAIL),\n"+
			"1 when not.\n\n"+
			"The checks describe this process: a service started by systemd or inside a\n"+
			"container gets its own limits and seccomp filter, so run doctor the same way\n"+
			"(e.g. docker run … secretheap doctor) to check the service's conditions.", stderr)
	asJSON := fs.Bool("json", false, "print the report as JSON (for scripts)")
	if done, st := parseFlags(fs, args); done {
		return st
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "secretheap doctor: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	rep := diagnose(gatherDoctorEnv())
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintf(stderr, "secretheap doctor: %v\n", err)
			return exitUsage
		}
	} else {
		printDoctor(stdout, rep)
	}
	if rep.Ready {
		return 0
	}
	return 1
}

func gatherDoctorEnv() doctorEnv {
	var e doctorEnv
	var uts unix.Utsname
	if err := unix.Uname(&uts); err == nil {
		e.release = unix.ByteSliceToString(uts.Release[:])
	}
	e.probeErr = secretmem.Probe()
	switch b, err := os.ReadFile(enableParamPath); {
	case err == nil:
		e.enableParam = strings.TrimSpace(string(b))
	case errors.Is(err, os.ErrPermission):
		e.enableParam = paramUnreadable
	}
	if b, err := procfs.ReadFile(0, "status"); err == nil {
		e.status = procfs.ParseStatus(b)
	}
	e.memlock, e.memlockErr = secretmem.ReadMemlock()
	e.kernel = secretmem.Detect()
	if b, err := os.ReadFile("/sys/power/state"); err == nil {
		e.powerState = strings.TrimSpace(string(b))
	}
	e.openssl = findOpenSSL()
	e.hook = probeHook(e.openssl)
	return e
}

// diagnose turns the gathered facts into verdicts. It reads nothing itself.
func diagnose(e doctorEnv) doctorReport {
	checks := []check{
		checkKernel(e.release),
		checkProbe(e.probeErr),
		checkEnableParam(e.enableParam, e.probeErr),
		checkSeccomp(e.status, e.probeErr),
		checkModel(e.kernel),
		checkMemlock(e.kernel, e.memlock, e.memlockErr, e.status),
		checkOpenSSL(e.openssl),
		checkHook(e.hook),
		checkHibernation(e.powerState),
	}
	rep := doctorReport{Ready: true, Checks: checks}
	for _, c := range checks {
		if c.Verdict == verdictFail {
			rep.Ready = false
		}
	}
	return rep
}

func printDoctor(w io.Writer, rep doctorReport) {
	for _, c := range rep.Checks {
		fmt.Fprintf(w, "%-4s  %-16s %s\n", c.Verdict, c.Name, c.Detail)
		if c.Fix != "" {
			for _, line := range strings.Split(c.Fix, "\n") {
				fmt.Fprintf(w, "      %-16s fix: %s\n", "", line)
			}
		}
	}
	if rep.Ready {
		fmt.Fprintln(w, "ready: programs on this machine can keep secrets in memfd_secret memory")
	} else {
		fmt.Fprintln(w, "not ready: fix the FAIL lines above")
	}
}

// kernelVersion parses "6.18.44-fc-v669" into 6, 18.
func kernelVersion(release string) (major, minor int, ok bool) {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	major, err1 := strconv.Atoi(parts[0])
	minorStr := parts[1]
	if i := strings.IndexFunc(minorStr, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		minorStr = minorStr[:i]
	}
	minor, err2 := strconv.Atoi(minorStr)
	return major, minor, err1 == nil && err2 == nil
}

func checkKernel(release string) check {
	c := check{Name: "kernel", Data: map[string]any{"release": release}}
	major, minor, ok := kernelVersion(release)
	switch {
	case !ok:
		c.Verdict, c.Detail = verdictWarn, fmt.Sprintf("cannot parse kernel release %q", release)
	case major < 5 || major == 5 && minor < 14:
		c.Verdict = verdictFail
		c.Detail = fmt.Sprintf("Linux %s: memfd_secret needs Linux 5.14 or later", release)
		c.Fix = "upgrade the kernel (6.5 or later has memfd_secret on by default)"
	case major < 6 || major == 6 && minor < 5:
		c.Verdict = verdictOK
		c.Detail = fmt.Sprintf("Linux %s: has memfd_secret, off by default before 6.5 (see secretmem.enable)", release)
	default:
		c.Verdict = verdictOK
		c.Detail = fmt.Sprintf("Linux %s: memfd_secret on by default (5.14+, default since 6.5)", release)
	}
	return c
}

func checkProbe(err error) check {
	c := check{Name: "memfd_secret"}
	if err == nil {
		c.Verdict = verdictOK
		c.Detail = "works: memfd_secret, ftruncate, mmap and commit of a test OS page succeeded"
		c.Data = map[string]any{"available": true}
		return c
	}
	c.Verdict = verdictFail
	c.Data = map[string]any{"available": false}
	var pe *secretmem.ProbeError
	switch {
	case errors.As(err, &pe) && errors.Is(err, secretmem.ErrMemlock):
		// The call exists but the limit refuses even one OS page: the
		// memlock line below carries the numbers and the fix.
		c.Detail = fmt.Sprintf("the syscall exists but %s of a test OS page failed with %s: %s",
			pe.Op, unix.ErrnoName(pe.Errno), pe.Reason)
		c.Fix = pe.Fix
		c.Data["errno"] = unix.ErrnoName(pe.Errno)
		return c
	case errors.As(err, &pe):
		c.Detail = fmt.Sprintf("unavailable: %s failed with %s (%s): %s",
			pe.Op, unix.ErrnoName(pe.Errno), pe.Errno.Error(), pe.Reason)
		c.Fix = pe.Fix
		c.Data["errno"] = unix.ErrnoName(pe.Errno)
	default:
		c.Detail = "unavailable: " + err.Error()
	}
	c.Detail += "; SECRETHEAP_BACKEND=auto would fall back to locked memory (still in the kernel direct map)"
	return c
}

// enableParamPath is the kernel's switch for memfd_secret (secretmem.enable
// on the kernel command line); the file is mode 0400 on most kernels.
const enableParamPath = "/sys/module/secretmem/parameters/enable"

// paramUnreadable stands for an enable parameter that exists but that this
// user may not read.
const paramUnreadable = "unreadable"

// bootParamFix tells how to set secretmem.enable=1 at boot.
const bootParamFix = "boot with secretmem.enable=1: add it to GRUB_CMDLINE_LINUX in /etc/default/grub, run update-grub (or grub2-mkconfig), reboot"

func checkEnableParam(param string, probeErr error) check {
	c := check{Name: "secretmem.enable", Data: map[string]any{"value": param}}
	switch param {
	case "Y", "y", "1":
		c.Verdict, c.Detail = verdictOK, "Y (/sys/module/secretmem/parameters/enable)"
	case "N", "n", "0":
		c.Verdict, c.Detail = verdictFail, "N: memfd_secret is switched off at boot (it returns ENOSYS)"
		c.Fix = bootParamFix
	case paramUnreadable:
		c.Verdict = verdictOK
		c.Detail = "present, readable only by root"
		if probeErr != nil && errors.Is(probeErr, unix.ENOSYS) {
			c.Verdict = verdictWarn
			c.Detail += "; memfd_secret returns ENOSYS, so it is probably N"
			c.Fix = bootParamFix
		}
	case "":
		if probeErr == nil {
			c.Verdict, c.Detail = verdictOK, "no module parameter on this kernel; not needed (memfd_secret works)"
		} else {
			c.Verdict = verdictWarn
			c.Detail = "no /sys/module/secretmem/parameters/enable: the kernel was probably built without CONFIG_SECRETMEM"
			c.Fix = "use a kernel built with CONFIG_SECRETMEM=y (most distribution kernels since 5.14 are)"
		}
	default:
		c.Verdict, c.Detail = verdictWarn, fmt.Sprintf("unexpected value %q", param)
	}
	return c
}

// seccompFix says how to let memfd_secret through the usual filters.
const seccompFix = "Docker/Podman: run with a seccomp profile that allows memfd_secret: copy the engine's default profile, add \"memfd_secret\" to the allowed syscalls, pass --security-opt seccomp=/path/profile.json\n" +
	"Kubernetes: a Localhost seccompProfile with memfd_secret allowed; systemd: if the unit sets SystemCallFilter=, add memfd_secret"

func checkSeccomp(status map[string]string, probeErr error) check {
	c := check{Name: "seccomp"}
	mode, filters := status["Seccomp"], status["Seccomp_filters"]
	c.Data = map[string]any{"mode": mode, "filters": filters}
	if mode == "" {
		c.Verdict, c.Detail = verdictWarn, "cannot read Seccomp from /proc/self/status"
		return c
	}
	eperm := errors.Is(probeErr, unix.EPERM)
	// A filter can fake any errno; ENOSYS is what a profile written before
	// the syscall existed, or one that wants callers to fall back, returns.
	refused := eperm || errors.Is(probeErr, unix.ENOSYS)
	switch mode {
	case "0":
		c.Verdict, c.Detail = verdictOK, "no seccomp filter on this process"
	case "2":
		n := filters
		if n == "" {
			n = "some"
		}
		if refused {
			c.Verdict = verdictFail
			c.Detail = fmt.Sprintf("a seccomp filter is active (%s filters) and memfd_secret fails with %s: the filter probably refuses it",
				n, unix.ErrnoName(errnoOf(probeErr)))
			c.Fix = seccompFix
		} else {
			c.Verdict = verdictOK
			c.Detail = fmt.Sprintf("filter mode (%s filters); memfd_secret is allowed", n)
		}
	default:
		c.Verdict, c.Detail = verdictWarn, "seccomp mode "+mode
	}
	if eperm && c.Verdict != verdictFail {
		// EPERM without a visible filter: an LSM or a filter in a parent
		// namespace. Say so rather than blame nothing.
		c.Verdict = verdictFail
		c.Detail += "; but memfd_secret returned EPERM (an LSM or a container runtime refuses it)"
		c.Fix = seccompFix
	}
	return c
}

// memlockFix says how to raise RLIMIT_MEMLOCK where services are started.
const memlockFix = "systemd unit: LimitMEMLOCK=64M under [Service]\n" +
	"Docker: docker run --ulimit memlock=67108864:67108864 … (bytes, soft:hard); Kubernetes: set it in the container runtime's default ulimits\n" +
	"shell: ulimit -l 65536 (KiB; raising the hard limit needs root), or /etc/security/limits.conf: `user - memlock 65536`"

// secretCapacity says how much secret memory a memlock headroom allows in
// pmdcache's terms: whole 2 MiB chunks, else one power-of-two chunk of at
// least 64 KiB.
func secretCapacity(headroom uint64) (chunks uint64, chunk uint64, total uint64) {
	if headroom >= chunkSize {
		chunks = headroom / chunkSize
		return chunks, chunkSize, chunks * chunkSize
	}
	if headroom < minChunk {
		return 0, 0, 0
	}
	chunk = minChunk
	for chunk*2 <= headroom {
		chunk *= 2
	}
	chunks = headroom / chunk
	return chunks, chunk, chunks * chunk
}

// checkModel names the accounting model the kernel uses for memfd_secret
// memory, found by how a fresh mapping behaves (never by version: Debian's
// 6.1.192 has the new model, its 6.1.176 the old one).
func checkModel(k secretmem.Kernel) check {
	c := check{Name: "accounting", Data: map[string]any{"model": k.Model.String(), "shared": k.Shared(), "bypass": k.Bypass()}}
	switch {
	case k.Unavailable != nil:
		c.Verdict, c.Detail = verdictOK, "no memfd_secret here: the locked backend's mlock is charged to each process (VmLck)"
	case k.Model == secretmem.ModelOld:
		c.Verdict = verdictOK
		c.Detail = "old model: secret memory is charged to each process for the whole mapping at mmap (it shows in VmLck); " +
			"CAP_IPC_LOCK bypasses RLIMIT_MEMLOCK"
	case k.Model == secretmem.ModelNew:
		c.Verdict = verdictOK
		c.Detail = "new model: each OS page is charged at first use to the user (one budget shared by every process of the uid, " +
			"not shown in VmLck); no CAP_IPC_LOCK bypass, root included; the library commits every page before use, so a refusal " +
			"is exhaustion, never SIGBUS"
	default:
		c.Verdict = verdictWarn
		c.Detail = "could not tell the model (mlockall(MCL_FUTURE) locks every mapping): the new model's rules are assumed"
	}
	return c
}

func checkMemlock(k secretmem.Kernel, m secretmem.Memlock, err error, status map[string]string) check {
	c := check{Name: "memlock"}
	if err != nil {
		c.Verdict, c.Detail = verdictWarn, "cannot read RLIMIT_MEMLOCK: "+err.Error()
		return c
	}
	capLock := false
	if mask, ok := status["CapEff"]; ok {
		capLock, _ = procfs.HasCap(mask, procfs.CapIPCLock)
	}
	c.Data = map[string]any{
		"limit":        m.Limit,
		"locked":       m.Locked,
		"unlimited":    m.Unlimited,
		"cap_ipc_lock": capLock,
		"shared":       k.Shared(),
	}
	if k.Shared() {
		return checkSharedBudget(c, m.Limit)
	}
	limitStr := formatBytes(m.Limit)
	if m.Unlimited {
		why := "RLIMIT_MEMLOCK is unlimited"
		if capLock {
			why = fmt.Sprintf("CAP_IPC_LOCK bypasses RLIMIT_MEMLOCK (%s)", limitStr)
		}
		c.Verdict, c.Detail = verdictOK, why+": secret memory is bounded only by RAM and SECRETHEAP_LIMIT"
		c.Data["allows_bytes"] = nil
		return c
	}
	head := m.Headroom()
	chunks, chunk, total := secretCapacity(head)
	c.Data["headroom"] = head
	c.Data["allows_bytes"] = total
	c.Data["chunk_bytes"] = chunk
	c.Data["chunks"] = chunks
	base := fmt.Sprintf("RLIMIT_MEMLOCK %s, %s locked already, no CAP_IPC_LOCK", limitStr, formatBytes(m.Locked))
	switch {
	case chunks == 0:
		c.Verdict = verdictFail
		c.Detail = fmt.Sprintf("%s: below the %s minimum chunk, no secret memory at all", base, formatBytes(minChunk))
		c.Fix = memlockFix
	case chunk < chunkSize:
		c.Verdict = verdictWarn
		c.Detail = fmt.Sprintf("%s: allows %s (chunks shrink to %s); enough for OpenSSL's secure heap (SECRETHEAP_OPENSSL=secure) but not for all of a TLS server's allocations (≈%s peak per process)",
			base, formatBytes(total), formatBytes(chunk), formatBytes(tlsProcessPeak))
		c.Fix = memlockFix
	default:
		c.Verdict = verdictOK
		c.Detail = fmt.Sprintf("%s: allows %d chunks of 2 MiB (%s) per process", base, chunks, formatBytes(total))
	}
	return c
}

// checkSharedBudget judges RLIMIT_MEMLOCK on the new model: a per-user
// budget with no bypass, charged per OS page committed, of which other
// processes of the user may hold any part (the kernel does not say how
// much): the limit is what the library could use at most.
func checkSharedBudget(c check, limit uint64) check {
	c.Data["unlimited"] = limit == unix.RLIM_INFINITY
	if limit == unix.RLIM_INFINITY {
		c.Verdict, c.Detail = verdictOK, "RLIMIT_MEMLOCK is unlimited: secret memory is bounded only by RAM and SECRETHEAP_LIMIT"
		return c
	}
	chunks, chunk, total := secretCapacity(limit)
	c.Data["allows_bytes"] = total
	c.Data["chunk_bytes"] = chunk
	c.Data["chunks"] = chunks
	base := fmt.Sprintf("RLIMIT_MEMLOCK %s is a budget shared by every process of this user (no CAP_IPC_LOCK bypass, root included)",
		formatBytes(limit))
	switch {
	case chunks == 0:
		c.Verdict = verdictFail
		c.Detail = fmt.Sprintf("%s: below the %s minimum chunk, no secret memory at all", base, formatBytes(minChunk))
	case chunk < chunkSize:
		c.Verdict = verdictWarn
		c.Detail = fmt.Sprintf("%s: the library could use at most %s (chunks shrink to %s), less what the user's other processes hold; enough for OpenSSL's secure heap (SECRETHEAP_OPENSSL=secure), not for all of a TLS server's allocations (≈%s peak per process)",
			base, formatBytes(total), formatBytes(chunk), formatBytes(tlsProcessPeak))
	default:
		c.Verdict = verdictWarn
		c.Detail = fmt.Sprintf("%s: the library could use at most %s, less what the user's other processes hold: a master and N forked workers share it (each worker's copy of the parent's pages is charged again)",
			base, formatBytes(total))
	}
	c.Fix = memlockFix
	return c
}

func checkHibernation(state string) check {
	c := check{Name: "hibernation", Data: map[string]any{"power_state": state}}
	if strings.Contains(" "+state+" ", " disk ") {
		c.Verdict = verdictWarn
		c.Detail = "hibernation (suspend to disk) is available here and will be refused while any process holds secret memory (a memfd_secret file)"
		c.Fix = "stop the programs using secretheap before hibernating, or run them with SECRETHEAP_BACKEND=locked on machines that must hibernate"
		return c
	}
	c.Verdict = verdictOK
	c.Detail = "no suspend to disk on this machine (/sys/power/state), so nothing is lost: memfd_secret blocks hibernation while in use"
	return c
}

// opensslInfo describes the system's OpenSSL as found without cgo.
type opensslInfo struct {
	Libcrypto string // path of libcrypto.so.3 or .so.1.1, "" if none
	Soname    string // "libcrypto.so.3" / "libcrypto.so.1.1"
	Binary    string // path of the openssl command, "" if none
	Version   string // first line of `openssl version`
}

// libcryptoSonames are the ABIs the hooks support (CRYPTO_set_mem_functions
// has had the same signature since 1.1.0), newest first.
var libcryptoSonames = []string{"libcrypto.so.3", "libcrypto.so.1.1"}

// knownLibDirs are searched when ldconfig is missing (containers often lack
// it) or its cache does not list libcrypto.
var knownLibDirs = []string{
	"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu",
	"/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/lib64", "/usr/lib", "/lib",
	"/usr/local/lib64", "/usr/local/lib",
}

func findOpenSSL() opensslInfo {
	var info opensslInfo
	info.Libcrypto, info.Soname = findLibcrypto(ldconfigCache())
	if p, err := exec.LookPath("openssl"); err == nil {
		info.Binary = p
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, p, "version").Output()
		if err == nil {
			info.Version = strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
		}
	}
	return info
}

// ldconfigCache returns `ldconfig -p` output, or nil.
func ldconfigCache() []byte {
	for _, p := range []string{"/sbin/ldconfig", "/usr/sbin/ldconfig", "ldconfig"} {
		path, err := exec.LookPath(p)
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, path, "-p").Output()
		cancel()
		if err == nil {
			return out
		}
	}
	return nil
}

// findLibcrypto picks libcrypto from `ldconfig -p` output (lines like
// "libcrypto.so.3 (libc6,x86-64) => /lib/x86_64-linux-gnu/libcrypto.so.3"),
// else from knownLibDirs.
func findLibcrypto(ldcache []byte) (path, soname string) {
	for _, want := range libcryptoSonames {
		sc := bufio.NewScanner(bytes.NewReader(ldcache))
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			name, rest, ok := strings.Cut(line, " ")
			if !ok || name != want {
				continue
			}
			if _, p, ok := strings.Cut(rest, "=> "); ok {
				if _, err := os.Stat(p); err == nil {
					return p, want
				}
			}
		}
	}
	for _, want := range libcryptoSonames {
		for _, d := range knownLibDirs {
			p := filepath.Join(d, want)
			if _, err := os.Stat(p); err == nil {
				return p, want
			}
		}
	}
	return "", ""
}

func checkOpenSSL(info opensslInfo) check {
	c := check{Name: "openssl", Data: map[string]any{
		"libcrypto": info.Libcrypto, "soname": info.Soname, "binary": info.Binary, "version": info.Version,
	}}
	switch {
	case info.Libcrypto == "":
		c.Verdict = verdictWarn
		c.Detail = "no libcrypto.so.3 or libcrypto.so.1.1 found: the LD_PRELOAD library has no OpenSSL to hook (the Go and C APIs still work)"
		c.Fix = "install OpenSSL's shared library (Debian/Ubuntu: libssl3; RHEL/Fedora: openssl-libs)"
	case info.Version != "":
		c.Verdict = verdictOK
		c.Detail = fmt.Sprintf("%s at %s; %s", info.Soname, info.Libcrypto, info.Version)
	default:
		c.Verdict = verdictOK
		c.Detail = fmt.Sprintf("%s at %s (no openssl command to report the version)", info.Soname, info.Libcrypto)
	}
	return c
}

// hookResult is the outcome of running `openssl version` with the library
// preloaded and reading the stats it writes at exit.
type hookResult struct {
	Library string // libsecretheap.so used, "" if none was found
	Binary  string // the openssl command run
	Skipped string // why the probe did not run
	Hooked  string // the stats' openssl_hooked value: "1" yes, "0" no, "2" refused
	// SecureInterposed is the OpenSSL hooks' verdict on CRYPTO_secure_*: "yes" when
	// libcrypto calls them through its PLT (SECRETHEAP_OPENSSL=secure works).
	SecureInterposed string
	Err              error  // the probe ran and failed
	Stats            string // the stats' human lines, for --json and for diagnosis
}

// probeHook runs the system's openssl with the library preloaded. The
// library decides at run time whether libcrypto's internal calls reach it
// (a -Bsymbolic build would bypass it), and reports that in its stats, so
// the check is the library's own verdict on this libcrypto, not a guess from
// the outside.
func probeHook(info opensslInfo) hookResult {
	lib, err := ldpreload.Resolve("")
	if err != nil {
		return hookResult{Skipped: err.Error()}
	}
	res := hookResult{Library: lib, Binary: info.Binary}
	if info.Binary == "" {
		res.Skipped = "no openssl command to run with the library preloaded"
		return res
	}
	dir, err := os.MkdirTemp("", "secretheap-doctor-")
	if err != nil {
		res.Err = err
		return res
	}
	defer os.RemoveAll(dir)
	statsPath := filepath.Join(dir, "stats")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, info.Binary, "version")
	name, _, cleanup, err := ldpreload.Loadable(lib)
	if err != nil {
		res.Err = err
		return res
	}
	defer cleanup()
	env := ldpreload.Env(os.Environ(), name)
	env = setEnv(env, "SECRETHEAP_STATS", statsEnv(statsPath))
	// The question is what the library can do with this libcrypto, not what
	// the caller's settings make it do: openssl_hooked is 1 only in mode all,
	// and backend auto works whether or not memfd_secret does.
	env = setEnv(env, "SECRETHEAP_OPENSSL", "all")
	env = setEnv(env, "SECRETHEAP_BACKEND", "auto")
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		res.Err = fmt.Errorf("openssl version with %s preloaded: %v: %s", lib, err, strings.TrimSpace(string(out)))
		return res
	}
	rs, err := readStats(statsPath)
	if err != nil {
		res.Err = fmt.Errorf("the library wrote no stats to SECRETHEAP_STATS: %w", err)
		return res
	}
	res.Stats = string(statsSummary(rs))
	v, ok := statsHooked(rs)
	if !ok {
		res.Err = fmt.Errorf("the library's stats have no \"openssl_hooked\" field: %q", shorten(res.Stats, 200))
		return res
	}
	res.Hooked = v
	res.SecureInterposed, _ = statsSecureInterposed(rs)
	return res
}

func checkHook(h hookResult) check {
	c := check{Name: "openssl hook", Data: map[string]any{"library": h.Library, "hooked": h.Hooked, "secure_interposed": h.SecureInterposed}}
	switch {
	case h.Skipped != "":
		c.Verdict = verdictWarn
		c.Detail = "not checked: " + h.Skipped
	case h.Err != nil:
		c.Verdict = verdictFail
		c.Detail = h.Err.Error()
	case isYes(h.Hooked) && (h.SecureInterposed == "yes" || h.SecureInterposed == ""):
		c.Verdict = verdictOK
		c.Detail = fmt.Sprintf("%s takes over OpenSSL's allocator (openssl version, preloaded: hooked; CRYPTO_secure_* interposed: %s)",
			filepath.Base(h.Library), orUnknown(h.SecureInterposed))
	case isYes(h.Hooked):
		// The library decides this at run time: mode secure falls back to
		// the general hooks for such a libcrypto (stats: secure served by
		// general-hooks), so both modes put every OpenSSL allocation in
		// secret memory.
		c.Verdict = verdictOK
		c.Detail = fmt.Sprintf("%s takes over OpenSSL's allocator (hooked); libcrypto binds its CRYPTO_secure_* calls internally (%s, e.g. linked -Bsymbolic as upstream does), so SECRETHEAP_OPENSSL=secure falls back to serving every OpenSSL allocation from secret memory, as mode all does",
			filepath.Base(h.Library), h.SecureInterposed)
	case h.Hooked == "2" || strings.EqualFold(h.Hooked, "refused"):
		c.Verdict = verdictFail
		c.Detail = "OpenSSL refused CRYPTO_set_mem_functions: it had allocated before the library's constructor ran"
		c.Fix = "make sure libsecretheap.so is first in LD_PRELOAD (secretheap run puts it there)"
	default:
		c.Verdict = verdictFail
		c.Detail = fmt.Sprintf("the library did not install its hooks in the libcrypto of %s (openssl hooked %s): is OpenSSL linked statically into it?", h.Binary, h.Hooked)
		c.Fix = "use a shared libcrypto (1.1.0 to 3.x); a program with OpenSSL linked in statically must call CRYPTO_set_mem_functions with wrappers around secretheap_malloc/realloc/free itself"
	}
	return c
}

// errnoOf returns the errno an error wraps, or 0.
func errnoOf(err error) unix.Errno {
	var en unix.Errno
	if errors.As(err, &en) {
		return en
	}
	return 0
}

func orUnknown(s string) string {
	if s == "" {
		return "not reported"
	}
	return s
}

func isYes(v string) bool {
	switch strings.ToLower(v) {
	case "1", "yes", "true":
		return true
	}
	return false
}
