package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cachepool/cachepool/bus/bustest"
	"github.com/cachepool/cachepool/contracts"
)

// findProcess returns the pid of the process whose command line contains
// every one of parts.
func findProcess(parts ...string) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		cmdline := strings.ReplaceAll(string(raw), "\x00", " ")
		match := true
		for _, p := range parts {
			match = match && strings.Contains(cmdline, p)
		}
		if match {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no process with %q", parts)
}

// TestKilledCacheNodeProcessIsReplaced runs every cache node as its own
// process (the exec provisioner), kills one with SIGKILL, and checks that
// the pool heals to its size and every read returns the right image
// throughout.
func TestKilledCacheNodeProcessIsReplaced(t *testing.T) {
	cfg := testConfig(t)
	cfg.Provisioner = "exec"
	cfg.Executable = cachepoolBinary(t)
	cfg.Nodes = 3
	p := startPool(t, cfg)
	const k = 300
	img := func(i int) []byte { return pngImage(i, 4) }
	p.fill(t, k, 8, img)
	before := p.nodes(t).IDs
	if len(before) != 3 {
		t.Fatalf("pool has %v", before)
	}
	victim := before[1]
	pid, err := findProcess("serve cachenode", "--id "+string(victim)+" ", p.info.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	readAll := func() error {
		for i := 0; i < k; i++ {
			code, raw, err := p.image(fmt.Sprintf("key-%d", i))
			if err != nil || code != 200 || !bytes.Equal(raw, img(i)) {
				return fmt.Errorf("key-%d: %d %v", i, code, err)
			}
		}
		return nil
	}
	// Reads keep working while the node is gone (its keys come from the store).
	if err := readAll(); err != nil {
		t.Fatalf("read after the kill: %v", err)
	}
	bustest.Eventually(t, time.Minute, func() error {
		l := p.nodes(t)
		if len(l.IDs) != 3 || slices.Contains(l.IDs, victim) {
			return fmt.Errorf("nodes %v", l.IDs)
		}
		for _, n := range l.Nodes {
			if n.State != contracts.NodeActive {
				return fmt.Errorf("node %s is %s", n.ID, n.State)
			}
		}
		return nil
	})
	t.Logf("pool healed to 3 nodes %v in %v after killing %s", p.nodes(t).IDs, time.Since(start).Round(time.Millisecond), victim)
	if err := readAll(); err != nil {
		t.Fatalf("read after healing: %v", err)
	}
}
