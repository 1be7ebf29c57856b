package manager

import (
	"strings"
	"testing"

	"github.com/cachepool/cachepool/contracts"
)

func TestDecide(t *testing.T) {
	cases := []struct {
		name      string
		cmd       contracts.ResizeCommand
		current   int
		available int
		wantTo    int
		reject    string
	}{
		{"increase", contracts.ResizeCommand{Change: 1}, 1, -1, 2, ""},
		{"decrease", contracts.ResizeCommand{Change: -1}, 3, -1, 2, ""},
		{"increase at max", contracts.ResizeCommand{Change: 1}, 8, -1, 8, "maximum of 8"},
		{"decrease at min", contracts.ResizeCommand{Change: -1}, 1, -1, 1, "minimum of 1"},
		{"target jump", contracts.ResizeCommand{Target: 6}, 2, -1, 6, ""},
		{"target same", contracts.ResizeCommand{Target: 3}, 3, -1, 3, ""},
		{"target above max", contracts.ResizeCommand{Target: 9}, 3, -1, 3, "outside 1..8"},
		{"target shrink", contracts.ResizeCommand{Target: 1}, 5, -1, 1, ""},
		{"standby short", contracts.ResizeCommand{Target: 4}, 2, 1, 2, "1 available"},
		{"standby enough", contracts.ResizeCommand{Change: 1}, 2, 1, 3, ""},
		{"standby shrink needs none", contracts.ResizeCommand{Change: -1}, 2, 0, 1, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := decide(c.cmd, c.current, 8, c.available)
			if d.To != c.wantTo || d.From != c.current {
				t.Fatalf("from %d to %d, want from %d to %d", d.From, d.To, c.current, c.wantTo)
			}
			if (c.reject == "") != (d.Reject == "") || !strings.Contains(d.Reject, c.reject) {
				t.Fatalf("reject %q, want one containing %q", d.Reject, c.reject)
			}
		})
	}
}

// TestDecideSerialReplay applies a random-looking sequence and checks the
// size never leaves 1..max and rejections happen exactly at the bounds.
func TestDecideSerialReplay(t *testing.T) {
	size := 1
	changes := []int{-1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1, -1, 1, -1, -1, -1, -1, -1, -1, -1, -1, -1}
	for i, ch := range changes {
		d := decide(contracts.ResizeCommand{Change: ch}, size, 8, -1)
		atBound := (ch > 0 && size == 8) || (ch < 0 && size == 1)
		if atBound != (d.Reject != "") {
			t.Fatalf("step %d: size %d change %d: reject %q", i, size, ch, d.Reject)
		}
		size = d.To
		if size < 1 || size > 8 {
			t.Fatalf("step %d: size %d out of bounds", i, size)
		}
	}
	if size != 1 {
		t.Fatalf("final size %d, want 1", size)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{Launcher: nopLauncher{}}).Validate(); err != nil {
		t.Fatalf("defaults with a launcher must be valid: %v", err)
	}
	if err := (Config{Provisioner: ProvisionerStandby}).Validate(); err != nil {
		t.Fatalf("standby needs no launcher: %v", err)
	}
	err := Config{Partitions: 100, MaxNodes: -1, Provisioner: "cloud", Replicas: 9}.Validate()
	if err == nil {
		t.Fatal("an invalid config passed")
	}
	for _, want := range []string{"partitions", "max nodes", "provisioner", "replicas"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	if err := (Config{}).Validate(); err == nil || !strings.Contains(err.Error(), "launcher") {
		t.Fatalf("local without a launcher: %v", err)
	}
}
