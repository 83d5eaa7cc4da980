package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/secretheap/secretheap/internal/launch"
)

// TLS handshakes with and without the library: in one process (bench/c/tlsbench)
// and over TCP against the forking example server.

func (b *bench) tlsSecs() float64 {
	if b.cfg.quick {
		return 0.3
	}
	return 2
}

func (b *bench) tls() error {
	variants := []variant{{"OpenSSL", false}}
	if b.lib != "" {
		variants = append(variants, variant{"OpenSSL+secretheap", true})
	}
	tlsbench := filepath.Join(b.bin, "tlsbench")
	secs := fmt.Sprintf("%g", b.tlsSecs())
	// In-process handshakes.
	for r := 1; r <= b.cfg.rounds; r++ {
		for _, v := range rotate(variants, r-1) {
			b.prog.step("TLS in-process round %d/%d: %s", r, b.cfg.rounds, v.label)
			recs, ok, err := b.records("TLS in-process "+v.label, 1, 2*time.Minute, b.env(v.preload), tlsbench, "inproc", "-s", secs)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			rate, _ := recs[0].Num("rate")
			b.add(Sample{Section: "tls-inproc", Workload: "full handshake (in-process), per wall second", Backend: v.label,
				Round: r, Value: rate, Unit: "handshakes/s"})
			if c, ok := recs[0].Num("cpu_rate"); ok {
				b.add(Sample{Section: "tls-inproc", Workload: "full handshake (in-process), per CPU second", Backend: v.label,
					Round: r, Value: c, Unit: "handshakes/s"})
			}
		}
	}
	// Committed secret memory after 100 handshakes ÷ peak live OpenSSL bytes.
	b.prog.step("TLS memory: peak live OpenSSL bytes")
	out, err := run(2*time.Minute, b.env(false), tlsbench, "inproc", "-n", "100", "--count")
	var peak float64
	if err == nil {
		if recs, perr := ParseRecords(out); perr == nil && len(recs) == 1 {
			peak, _ = recs[0].Num("peak_live_bytes")
			b.add(Sample{Section: "memory", Workload: "TLS in-process, 100 handshakes: peak live OpenSSL bytes (no library)",
				Backend: "OpenSSL", Round: 1, Value: peak, Unit: "bytes"})
		}
	} else if err := b.fail(err, "TLS peak live bytes"); err != nil {
		return err
	}
	b.prog.step("TLS memory: committed under the library")
	if b.lib != "" {
		out, err := run(2*time.Minute, b.env(true), tlsbench, "inproc", "-n", "100")
		if err == nil {
			if recs, perr := ParseRecords(out); perr == nil && len(recs) == 1 {
				c, _ := recs[0].Num("bytes_committed")
				b.add(Sample{Section: "memory", Workload: "TLS in-process, 100 handshakes: committed secret bytes",
					Backend: "OpenSSL+secretheap", Round: 1, Value: c, Unit: "bytes"})
				if peak > 0 {
					b.add(Sample{Section: "memory", Workload: "TLS in-process, 100 handshakes: committed ÷ peak live OpenSSL bytes",
						Backend: "OpenSSL+secretheap", Round: 1, Value: c / peak, Unit: "ratio"})
				}
			}
		} else if err := b.fail(err, "TLS committed bytes"); err != nil {
			return err
		}
	}
	return b.tlsTCP(variants)
}

// serverPath finds the forking example server: built by make, else compiled
// here from examples/openssl/tls_server.c (not edited, only built).
func (b *bench) serverPath() (string, error) {
	p := filepath.Join(b.cfg.root, "build", "tls_server")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	src := filepath.Join(b.cfg.root, "examples", "openssl", "tls_server.c")
	if _, err := os.Stat(src); err != nil {
		return "", fmt.Errorf("examples/openssl/tls_server.c not present")
	}
	p = filepath.Join(b.bin, "tls_server")
	args := append(append([]string{}, cflags...), "-o", p, src, "-lssl", "-lcrypto")
	if _, err := run(2*time.Minute, cleanEnv(), ccName(), args...); err != nil {
		return "", err
	}
	return p, nil
}

const tcpWorkers = 4

func (b *bench) tlsTCP(variants []variant) error {
	rounds := min(b.cfg.rounds, 3)
	server, err := b.serverPath()
	if err != nil {
		b.note("forking TLS server benchmark skipped: %v", err)
		b.prog.done += rounds * 2
		return nil
	}
	dir, err := os.MkdirTemp("", "benchreport-tls")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if _, err := run(time.Minute, cleanEnv(), filepath.Join(b.bin, "tlsbench"), "gencert", dir); err != nil {
		return err
	}
	secs := b.tlsSecs() + 1
	for r := 1; r <= rounds; r++ {
		for _, v := range rotate(variants, r-1) {
			b.prog.step("TLS forking server round %d/%d: %s", r, rounds, v.label)
			rate, slow, err := b.oneTCPRun(server, dir, v.preload, secs)
			if err != nil {
				if err := b.fail(err, "TLS forking server "+v.label); err != nil {
					return err
				}
				continue
			}
			b.add(Sample{Section: "tls-tcp", Workload: fmt.Sprintf("full handshake, forking server (%d workers) over 127.0.0.1", tcpWorkers),
				Backend: v.label, Round: r, Value: rate, Unit: "handshakes/s"})
			if slow > 0 {
				b.note("TLS forking server round %d, %s: %d connection(s) took over 200 ms (a worker or the client not scheduled, or a SYN retransmitted): the round's rate is depressed",
					r, v.label, slow)
			}
		}
	}
	return nil
}

// oneTCPRun starts the server (library preloaded or not), drives it with
// tlsbench client (never preloaded) for secs, and stops it.
func (b *bench) oneTCPRun(server, dir string, preload bool, secs float64) (rate float64, slow int, err error) {
	// CleanEnv, then b.env's own list: a user's SECRETHEAP_* stays out.
	srv, _, err := launch.ForkServer(context.Background(), launch.Options{CleanEnv: true, Env: b.env(preload)}, server,
		launch.KeyPair{Key: filepath.Join(dir, "key.pem"), Cert: filepath.Join(dir, "cert.pem")}, tcpWorkers)
	if err != nil {
		return 0, 0, err
	}
	defer srv.Signal(syscall.SIGTERM, 10*time.Second)
	port := srv.Port
	out, err := run(time.Duration(secs*float64(time.Second))+time.Minute, b.env(false),
		filepath.Join(b.bin, "tlsbench"), "client", "-p", strconv.Itoa(port),
		"-ca", filepath.Join(dir, "cert.pem"), "-s", fmt.Sprintf("%g", secs), "-j", "2", "-n", "20000")
	if err != nil {
		return 0, 0, fmt.Errorf("%w (server: %s)", err, srv.Stderr())
	}
	recs, err := ParseRecords(out)
	if err != nil || len(recs) != 1 {
		return 0, 0, fmt.Errorf("client output %q: %v", out, err)
	}
	rate, _ = recs[0].Num("rate")
	s, _ := recs[0].Num("slow")
	return rate, int(s), nil
}

// variant is one side of a with/without-the-library comparison.
type variant struct {
	label   string
	preload bool
}
