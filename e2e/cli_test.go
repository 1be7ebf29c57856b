package e2e

import (
	"bufio"
	"context"
	"fmt"
	"github.com/cachepool/cachepool/bus/bustest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// natsCLI finds the nats CLI (installed by .ci/run with
// `go install github.com/nats-io/natscli/nats@v0.5.0`).
func natsCLI(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nats"); err == nil {
		return p
	}
	gopath, _ := exec.Command("go", "env", "GOPATH").Output()
	p := filepath.Join(strings.TrimSpace(string(gopath)), "bin", "nats")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatal("the nats CLI is not installed (go install github.com/nats-io/natscli/nats@v0.5.0)")
	}
	t.Skip("the nats CLI is not installed; run: go install github.com/nats-io/natscli/nats@v0.5.0")
	return ""
}

// docExamples returns the `nats …` lines of the sh blocks in docs/SUBJECTS.md.
func docExamples(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("../docs/SUBJECTS.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	inSh := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "```sh"):
			inSh = true
		case strings.HasPrefix(line, "```"):
			inSh = false
		case inSh && strings.HasPrefix(line, "nats "):
			out = append(out, line)
		}
	}
	if len(out) < 10 {
		t.Fatalf("found only %d nats examples in docs/SUBJECTS.md", len(out))
	}
	return out
}

// TestSubjectsDocExamplesRunVerbatim runs every `nats` example of
// docs/SUBJECTS.md, as written, against a running system.
func TestSubjectsDocExamplesRunVerbatim(t *testing.T) {
	cli := natsCLI(t)
	cfg := testConfig(t)
	cfg.MaxNodes = 4
	p := startPool(t, cfg)
	if code, _ := p.upload(t, "doc-example", pngImage(1, 4)); code != 200 {
		t.Fatalf("upload: %d", code)
	}
	env := append(os.Environ(), "NATS_URL="+p.info.NATSURL, "NATS_CONTEXT=", "HOME="+t.TempDir())
	subErrs := make(chan error, 4)
	for _, line := range docExamples(t) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		cmd := exec.CommandContext(ctx, "sh", "-c", strings.Replace(line, "nats ", cli+" ", 1))
		cmd.Env = env
		if strings.HasPrefix(line, "nats sub ") {
			// A subscription waits for events: make some until it has seen enough.
			subDone := make(chan struct{})
			go func(line string) {
				defer close(subDone)
				defer cancel()
				if out, err := cmd.CombinedOutput(); err != nil {
					subErrs <- &exampleError{line, err, string(out)}
				}
			}(line)
			deadline := time.After(60 * time.Second)
		poll:
			for {
				p.jsonDo(t, "POST", "/api/manager/mode", map[string]string{"mode": "manual"})
				select {
				case <-subDone:
					break poll
				case <-deadline:
					t.Errorf("%s saw no events within 60s", line)
					break poll
				case <-time.After(200 * time.Millisecond):
				}
			}
			continue
		}
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			t.Errorf("example failed: %s\n%v\n%s", line, err, out)
			continue
		}
		if strings.Contains(string(out), "Nats-Service-Error") {
			t.Errorf("example answered an error: %s\n%s", line, out)
		}
		t.Logf("ok: %s", line)
	}
	close(subErrs)
	for err := range subErrs {
		t.Error(err)
	}
}

type exampleError struct {
	line string
	err  error
	out  string
}

func (e *exampleError) Error() string { return e.line + ": " + e.err.Error() + "\n" + e.out }

// TestCachepoolAdminCommands drives the cachepool admin subcommands against
// a running system.
func TestCachepoolAdminCommands(t *testing.T) {
	bin := cachepoolBinary(t)
	cfg := testConfig(t)
	cfg.MaxNodes = 3
	p := startPool(t, cfg)
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, append(args, "--nats", p.info.NATSURL)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("cachepool %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if out := run("pool", "status"); !strings.Contains(out, "size 1") || !strings.Contains(out, "NODE") {
		t.Fatalf("pool status:\n%s", out)
	}
	if out := run("pool", "resize", "+1"); !strings.Contains(out, "applied") {
		t.Fatalf("pool resize +1:\n%s", out)
	}
	if out := run("pool", "resize", "--to", "3"); !strings.Contains(out, "applied") {
		t.Fatalf("pool resize --to 3:\n%s", out)
	}
	if out := run("pool", "nodes"); strings.Count(out, "active") != 3 {
		t.Fatalf("pool nodes after growing to 3:\n%s", out)
	}
	// At the bound: rejected with the reason, exit status 1.
	cmd := exec.Command(bin, "pool", "resize", "+1", "--nats", p.info.NATSURL)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "rejected") {
		t.Fatalf("resize past the bound: %v\n%s", err, out)
	}
	if out := run("config", "--capacity", "32", "--policy", "random"); !strings.Contains(out, "random") {
		t.Fatalf("config:\n%s", out)
	}
	if out := run("mode", "automatic", "--max-miss", "0.7"); !strings.Contains(out, "automatic") || !strings.Contains(out, "0.7") {
		t.Fatalf("mode automatic:\n%s", out)
	}
	if out := run("mode", "manual"); !strings.Contains(out, "manual") {
		t.Fatalf("mode manual:\n%s", out)
	}
	if out := run("stats"); !strings.Contains(out, "MISS") {
		t.Fatalf("stats:\n%s", out)
	}
	if out := run("pool", "requests"); strings.Count(out, "applied") < 2 {
		t.Fatalf("pool requests:\n%s", out)
	}
	if out := run("clear", "cache"); !strings.Contains(out, "cleared") {
		t.Fatalf("clear cache:\n%s", out)
	}
	if out := run("scaler", "decisions"); !strings.Contains(out, "ACTION") {
		t.Fatalf("scaler decisions:\n%s", out)
	}

	// cachepool events prints pool events as they happen.
	ev := startProc(t, "events", "--nats", p.info.NATSURL)
	bustest.Eventually(t, 30*time.Second, func() error {
		p.jsonDo(t, "DELETE", "/api/manager/cache/clear", nil)
		if out := ev.output(); !strings.Contains(out, "cachepool.v1.pool.evt.cleared") {
			return fmt.Errorf("no cleared event printed yet:\n%s", out)
		}
		return nil
	})
	if strings.Contains(ev.output(), ".evt.heartbeat.") {
		t.Error("cachepool events printed heartbeats without --all")
	}
}
