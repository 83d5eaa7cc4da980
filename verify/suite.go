package verify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Attack reads the memory of one process of a running target.
type Attack struct {
	Short string // flag name: mem, vm_readv, ptrace, gcore, core
	Name  string
	// Kills: the process is gone afterwards (a crash dump); such attacks
	// run last, once per process.
	Kills bool
	// Dump: the attack reads a core file (gcore, a crash), which leaves
	// out MADV_DONTDUMP mappings; the locked backend protects only here.
	Dump bool
	Run  func(ctx context.Context, p Proc, r *Running) (*Image, error)
}

// Result is one attack on one process.
type Result struct {
	Target     string
	Mode       Mode
	Attack     string
	Proc       string
	Hits       []Hit
	BytesRead  uint64
	Unreadable int // mappings the attack was refused (or the dump left out)
	Secret     int // of those, memfd_secret mappings
	Dump       bool
	Defect     string   // see Image.Defect
	Copies     []Copies // per needle, when the target asks (Running.Count)
	Err        error
}

// Coverage says, per mode, which kinds of secret the library keeps out of
// reach of every attack. It is the claim the suite checks: a hit of a
// claimed kind in a protected run fails the suite, unless it sits in a
// mapping the library cannot reach (Unreachable). Kinds not claimed are
// reported with where they were found.
//
// Why each entry is what it is (measured with this suite, OpenSSL 3.0):
//   - all: every OpenSSL allocation is secret memory, so the key numbers in
//     both byte orders (BIGNUMs, Montgomery contexts, DER decoding buffers)
//     and the TLS secrets (held in the SSL object) are claimed. The PEM text
//     is not: libc's stdio buffer of the key file (fopen/fread inside
//     BIO_new_file) is libc malloc memory that OpenSSL never sees, and it
//     keeps the text after fclose.
//   - secure: only CRYPTO_secure_* allocations: the private-key BIGNUMs
//     (key-le). The RSA primes are copied into Montgomery contexts made with
//     CRYPTO_malloc, the DER buffers of the key are CRYPTO_malloc memory, and
//     so are the TLS secrets: none of these is claimed.
//   - secret (Go): the bytes live only in the alloc.Secret.
//   - Go keys: only with the recipes built with GOEXPERIMENT=runtimesecret
//     are the keys and what the crypto derives from them claimed. Without
//     the experiment the Ed25519 signer's per-signature Go-heap copy of the
//     key, and everything hmac.New and crypto/ed25519 derive, stay in freed
//     Go memory until it is reused (the copies table says how many).
var Coverage = map[Mode]map[Kind]bool{
	ModeAll:       {KindKeyBE: true, KindKeyLE: true, KindPrimeLE: true, KindTLS: true},
	ModeSecure:    {KindKeyLE: true},
	ModeSecret:    {KindGo: true},
	ModeGoRecipe:  {},
	ModeGoErasing: {KindGo: true, KindGoDerived: true},
	// locked: the same claims as all, against dumps only (Attack.Dump): the
	// pages carry MADV_DONTDUMP, but /proc/PID/mem, process_vm_readv and
	// ptrace read them like any memory.
	ModeLocked: {KindKeyBE: true, KindKeyLE: true, KindPrimeLE: true, KindTLS: true},
}

// Unreachable says whether a mapping is out of the library's reach: the
// main thread's stack, where OpenSSL's key schedule leaves copies in local
// arrays. A claimed secret found there is reported, named, but does not fail
// the suite; anywhere else ([heap], anonymous memory) it does.
func Unreachable(mapping string) bool { return mapping == "[stack]" }

// claimBroken says whether hit h, found in a run of mode m by an attack
// that reads a core file (dump) or live memory, breaks the coverage claim.
func claimBroken(m Mode, dump bool, h Hit) bool {
	if m == ModeLocked && !dump {
		return false
	}
	return m.Protected() && Coverage[m][h.Needle.Kind] && !Unreachable(h.Mapping)
}

// Controls lists, per target kind, the kinds every attack must find in the
// unprotected run: finding none there means the attack is broken, not that
// the program is safe.
var Controls = map[string][]Kind{
	"s_server":   {KindKeyLE, KindTLS},
	"tls_server": {KindKeyLE, KindTLS},
	"Go program": {KindGo},
	"Go keys":    {KindGo, KindGoDerived},
}

func controlsFor(target string) []Kind {
	for k, v := range Controls {
		if strings.HasPrefix(target, k) {
			return v
		}
	}
	return nil
}

// Suite runs attacks against targets.
type Suite struct {
	Env     Env
	Targets []Target
	Attacks []Attack
	Log     io.Writer
	Results []Result
	Notes   []string
}

func (s *Suite) logf(format string, a ...any) {
	if s.Log != nil {
		fmt.Fprintf(s.Log, format+"\n", a...)
	}
}

// Run starts every target in every mode and runs every attack on every
// process of it. Errors starting a target are results too (they fail the
// suite unless the target is skipped on this machine).
func (s *Suite) Run(ctx context.Context) {
	for _, t := range s.Targets {
		for _, m := range t.Modes() {
			s.runOne(ctx, t, m)
		}
	}
}

func (s *Suite) runOne(ctx context.Context, t Target, m Mode) {
	start := time.Now()
	r, err := t.Start(ctx, s.Env, m)
	if err != nil {
		s.Results = append(s.Results, Result{Target: t.Name(), Mode: m, Attack: "(start)", Err: err})
		s.logf("%-22s %-8s start: %v", t.Name(), m, err)
		return
	}
	defer r.Stop()
	for _, n := range r.Notes {
		s.Notes = append(s.Notes, fmt.Sprintf("%s (%s): %s", t.Name(), m, n))
	}
	var live, kill []Attack
	for _, a := range s.Attacks {
		if a.Kills {
			kill = append(kill, a)
		} else {
			live = append(live, a)
		}
	}
	for _, a := range live {
		for _, p := range r.Procs {
			s.attack(ctx, t, m, a, p, r)
		}
	}
	// Crash dumps last; workers before their parent, so the parent is
	// still there to be dumped and does not take the workers down with it.
	for _, a := range kill {
		for i := len(r.Procs) - 1; i >= 0; i-- {
			s.attack(ctx, t, m, a, r.Procs[i], r)
		}
	}
	s.logf("%-22s %-8s %d processes, %d needles, %.1fs", t.Name(), m, len(r.Procs), len(r.Needles),
		time.Since(start).Seconds())
}

func (s *Suite) attack(ctx context.Context, t Target, m Mode, a Attack, p Proc, r *Running) {
	res := Result{Target: t.Name(), Mode: m, Attack: a.Name, Proc: p.Role, Dump: a.Dump}
	im, err := a.Run(ctx, p, r)
	if err != nil {
		res.Err = err
	} else {
		res.Hits = im.Search(r.Needles)
		if r.Count {
			res.Copies = CountCopies(im, r.Needles)
		}
		res.Defect = im.Defect
		res.BytesRead = im.BytesRead
		res.Unreadable = len(im.Unreadable)
		for _, m := range im.Unreadable {
			if m.Label() == "secretmem" {
				res.Secret++
			}
		}
	}
	s.Results = append(s.Results, res)
}

// minBytesRead is the least a protected run's attack must read for its
// "nothing found" to count: every target has megabytes of ordinary memory
// (libraries' data, heap, stack) outside the secret pages.
const minBytesRead = 256 << 10

// Failure is one reason the suite fails.
type Failure struct{ Target, Mode, Attack, Why string }

// String formats the failure as target / mode / attack: why.
func (f Failure) String() string {
	return fmt.Sprintf("%s / %s / %s: %s", f.Target, f.Mode, f.Attack, f.Why)
}

// Check applies the coverage claim and the controls to the results.
func (s *Suite) Check() []Failure {
	var fails []Failure
	type key struct {
		target string
		mode   Mode
		attack string
	}
	found := map[key]map[Kind]bool{}
	for _, r := range s.Results {
		k := key{r.Target, r.Mode, r.Attack}
		if found[k] == nil {
			found[k] = map[Kind]bool{}
		}
		var sk ErrSkipped
		switch {
		case errors.As(r.Err, &sk):
			continue
		case r.Err != nil:
			fails = append(fails, Failure{r.Target, string(r.Mode), r.Attack,
				fmt.Sprintf("%s: error: %v", r.Proc, r.Err)})
			continue
		}
		if r.Defect != "" {
			fails = append(fails, Failure{r.Target, string(r.Mode), r.Attack,
				fmt.Sprintf("%s: library defect: %s (worked around from outside to run the attack)", r.Proc, r.Defect)})
		}
		if r.Mode.Protected() && r.BytesRead < minBytesRead {
			// Finding nothing proves something only if the attack read
			// the process's ordinary memory.
			fails = append(fails, Failure{r.Target, string(r.Mode), r.Attack,
				fmt.Sprintf("%s: read only %d bytes: the attack did not really run", r.Proc, r.BytesRead)})
		}
		for _, h := range r.Hits {
			found[k][h.Needle.Kind] = true
			if claimBroken(r.Mode, r.Dump, h) {
				fails = append(fails, Failure{r.Target, string(r.Mode), r.Attack,
					fmt.Sprintf("%s: protected secret %s (%s, %s match) found in %s at %#x",
						r.Proc, h.Needle.Name, h.Needle.Kind, h.Match, h.Mapping, h.Addr)})
			}
		}
	}
	for _, r := range s.Results {
		var sk ErrSkipped
		if r.Mode.Protected() || r.Err != nil || errors.As(r.Err, &sk) {
			continue
		}
		k := key{r.Target, r.Mode, r.Attack}
		for _, c := range controlsFor(r.Target) {
			if !found[k][c] {
				fails = append(fails, Failure{r.Target, string(r.Mode), r.Attack,
					fmt.Sprintf("control: found no %s secret without the library (attack broken?)", c)})
				found[k][c] = true // report once
			}
		}
	}
	return fails
}

// cell summarises, for one target/mode/attack, where one kind was found:
// each mapping with the processes it was found in.
func (s *Suite) cell(target string, m Mode, attack string, k Kind) string {
	where := map[string]map[string]bool{} // mapping -> process roles
	broken := false
	ran := false
	multi := len(s.procsOf(target, m)) > 1
	for _, r := range s.Results {
		if r.Target != target || r.Mode != m || r.Attack != attack {
			continue
		}
		if r.Err != nil {
			var sk ErrSkipped
			if errors.As(r.Err, &sk) {
				return "skip"
			}
			return "ERROR"
		}
		ran = true
		for _, h := range r.Hits {
			if h.Needle.Kind != k {
				continue
			}
			mp := shortMapping(h.Mapping)
			if where[mp] == nil {
				where[mp] = map[string]bool{}
			}
			where[mp][shortRole(r.Proc)] = true
			broken = broken || claimBroken(m, r.Dump, h)
		}
	}
	if !ran {
		return ""
	}
	if !s.kindExists(target, k) {
		return "n/a"
	}
	if len(where) == 0 {
		return "-"
	}
	var parts []string
	for mp, roles := range where {
		p := mp
		if multi {
			rs := make([]string, 0, len(roles))
			for r := range roles {
				rs = append(rs, r)
			}
			sort.Strings(rs)
			p += "(" + strings.Join(rs, ",") + ")"
		}
		parts = append(parts, p)
	}
	sort.Strings(parts)
	tag := "found"
	switch {
	case broken:
		tag = "LEAK!"
	case m.Protected():
		tag = "leak"
	}
	return tag + " " + strings.Join(parts, " ")
}

// shortRole abbreviates a process role for table cells.
func shortRole(role string) string {
	if strings.HasPrefix(role, "worker ") {
		return "w" + strings.TrimPrefix(role, "worker ")
	}
	if role == "parent" {
		return "p"
	}
	return role
}

func (s *Suite) procsOf(target string, m Mode) map[string]bool {
	out := map[string]bool{}
	for _, r := range s.Results {
		if r.Target == target && r.Mode == m && r.Proc != "" {
			out[r.Proc] = true
		}
	}
	return out
}

// kindExists says whether a target has needles of the kind at all.
func (s *Suite) kindExists(target string, k Kind) bool {
	switch {
	case strings.HasPrefix(target, "Go program"):
		return k == KindGo
	case strings.HasPrefix(target, "Go keys"):
		return k == KindGo || k == KindGoDerived
	default:
		return k != KindGo && k != KindGoDerived
	}
}

func shortMapping(m string) string {
	if strings.HasPrefix(m, "/") {
		return filepath.Base(m)
	}
	return m
}

// Table renders the results: one row per attack, target and mode, one
// column per kind of secret. "found" in a run without the library is the
// proof the attack works; "leak" with the library is a kind the coverage
// table does not claim; "LEAK!" is a broken claim.
func (s *Suite) Table() string {
	var rows [][]string
	head := []string{"attack", "target", "library"}
	for _, k := range Kinds {
		head = append(head, string(k))
	}
	rows = append(rows, head)
	seen := map[string]bool{}
	var attacks []string
	for _, a := range s.Attacks {
		attacks = append(attacks, a.Name)
	}
	for _, a := range attacks {
		for _, t := range s.Targets {
			for _, m := range t.Modes() {
				k := a + "|" + t.Name() + "|" + string(m)
				if seen[k] {
					continue
				}
				seen[k] = true
				row := []string{a, t.Name(), string(m)}
				started := true
				for _, r := range s.Results {
					if r.Target == t.Name() && r.Mode == m && r.Attack == "(start)" {
						started = false
					}
				}
				for _, kind := range Kinds {
					if !started {
						row = append(row, "not started")
						continue
					}
					row = append(row, s.cell(t.Name(), m, a, kind))
				}
				rows = append(rows, row)
			}
		}
	}
	return renderTable(rows)
}

// ReadsTable shows, per attack, what the runs with the library read and
// were refused: "nothing found" means something only next to megabytes read.
func (s *Suite) ReadsTable() string {
	rows := [][]string{{"attack", "runs", "MiB read", "mappings refused", "of them memfd_secret"}}
	for _, a := range s.Attacks {
		var runs, refused, secret int
		var read uint64
		for _, r := range s.Results {
			if r.Attack != a.Name || !r.Mode.Protected() || r.Err != nil {
				continue
			}
			runs++
			read += r.BytesRead
			refused += r.Unreadable
			secret += r.Secret
		}
		rows = append(rows, []string{a.Name, fmt.Sprint(runs), fmt.Sprintf("%.1f", float64(read)/(1<<20)),
			fmt.Sprint(refused), fmt.Sprint(secret)})
	}
	return renderTable(rows)
}

// CoverageTable renders the coverage claim per OpenSSL mode, with where the
// kinds were found in this run: unclaimed kinds anywhere, claimed kinds in
// mappings out of the library's reach.
func (s *Suite) CoverageTable() string {
	rows := [][]string{{"secret", "SECRETHEAP_OPENSSL=all", "SECRETHEAP_OPENSSL=secure", "all, locked backend: live reads / dumps"}}
	for _, k := range []Kind{KindKeyBE, KindKeyLE, KindPrimeLE, KindPEM, KindTLS} {
		row := []string{string(k)}
		for _, col := range []struct {
			m    Mode
			dump int // -1 any attack, 0 live reads only, 1 dumps only
		}{{ModeAll, -1}, {ModeSecure, -1}, {ModeLocked, 0}, {ModeLocked, 1}} {
			m := col.m
			wheres := map[string]bool{}
			for _, r := range s.Results {
				if r.Mode != m || (col.dump == 0 && r.Dump) || (col.dump == 1 && !r.Dump) {
					continue
				}
				for _, h := range r.Hits {
					if h.Needle.Kind == k {
						wheres[shortMapping(h.Mapping)] = true
					}
				}
			}
			ws := make([]string, 0, len(wheres))
			for w := range wheres {
				ws = append(ws, w)
			}
			sort.Strings(ws)
			claimed := Coverage[m][k] && !(m == ModeLocked && col.dump == 0)
			var reachable []string
			for _, w := range ws {
				if !Unreachable(w) {
					reachable = append(reachable, w)
				}
			}
			var cell string
			switch {
			case claimed && len(reachable) > 0:
				cell = "CLAIM BROKEN: " + strings.Join(ws, ", ")
			case claimed && len(ws) == 0:
				cell = "protected"
			case claimed:
				cell = "protected; copy left in " + strings.Join(ws, ", ")
			case len(ws) == 0:
				cell = "not claimed (none found this run)"
			default:
				cell = "NOT protected: " + strings.Join(ws, ", ")
			}
			if col.m == ModeLocked && col.dump == 1 {
				row[len(row)-1] += " / " + cell
			} else {
				row = append(row, cell)
			}
		}
		rows = append(rows, row)
	}
	return renderTable(rows)
}

func renderTable(rows [][]string) string {
	width := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], len(c))
		}
	}
	var b strings.Builder
	for ri, r := range rows {
		for i, c := range r {
			if i > 0 {
				b.WriteString(" | ")
			}
			fmt.Fprintf(&b, "%-*s", width[i], c)
		}
		b.WriteString("\n")
		if ri == 0 {
			for i, w := range width {
				if i > 0 {
					b.WriteString("-+-")
				}
				b.WriteString(strings.Repeat("-", w))
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}
