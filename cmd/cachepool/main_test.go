package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/cachepool/cachepool/system"
)

func TestEnvTwinsFillUnsetFlagsOnly(t *testing.T) {
	cfg := system.Defaults()
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	systemFlags(fs, &cfg)
	env := map[string]string{
		"CACHEPOOL_MAX_NODES":      "5",
		"CACHEPOOL_NODES":          "3",
		"CACHEPOOL_MAX_IMAGE_SIZE": "2MiB",
		"CACHEPOOL_STATS_BUCKET":   "10s",
		"CACHEPOOL_ADMIN_TOKEN":    "s3cret",
	}
	if err := parse(fs, []string{"--nodes", "2"}, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if cfg.MaxNodes != 5 || cfg.Nodes != 2 || cfg.MaxImageBytes != 2<<20 || cfg.StatsBucket != 10*time.Second || cfg.AdminToken != "s3cret" {
		t.Fatalf("got %+v", cfg)
	}
}

func TestEnvTwinErrorsNameTheVariable(t *testing.T) {
	cfg := system.Defaults()
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	systemFlags(fs, &cfg)
	err := parse(fs, nil, func(k string) string {
		if k == "CACHEPOOL_HEARTBEAT" {
			return "often"
		}
		return ""
	})
	var ue usageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "CACHEPOOL_HEARTBEAT") {
		t.Fatalf("got %v", err)
	}
}

func TestParseBytes(t *testing.T) {
	good := map[string]int64{"8MiB": 8 << 20, "512KiB": 512 << 10, "1048576": 1 << 20, "1.5MiB": 3 << 19, "2MB": 2e6, "0": 0}
	for s, want := range good {
		if got, err := parseBytes(s); err != nil || got != want {
			t.Errorf("%q: %d %v, want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "big", "-1", "-2MiB", "MiB"} {
		if _, err := parseBytes(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
	if formatBytes(8<<20) != "8MiB" || formatBytes(1000) != "1000" {
		t.Error("formatBytes")
	}
}

func TestUsageErrors(t *testing.T) {
	ctx := context.Background()
	none := func(string) string { return "" }
	cases := map[string][]string{
		"no command":       nil,
		"unknown command":  {"launch"},
		"serve no service": {"serve"},
		"bad flag":         {"up", "--no-such-flag"},
		"bad nodes":        {"up", "--nodes", "0", "--data", "x"},
		"bad partitions":   {"up", "--partitions", "100"},
		"bad policy":       {"up", "--policy", "fifo"},
		"up with args":     {"up", "extra"},
	}
	for name, args := range cases {
		var out, errOut bytes.Buffer
		err := run(ctx, args, none, &out, &errOut)
		var ue usageError
		if !errors.As(err, &ue) {
			t.Errorf("%s: got %v, want a usage error", name, err)
		}
	}
	var out bytes.Buffer
	if err := run(ctx, []string{"help"}, none, &out, &out); err != nil || !strings.Contains(out.String(), "cachepool up") {
		t.Errorf("help: %v %q", err, out.String())
	}
}

func TestAdminWithoutServerSaysHowToFindIt(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"pool", "status", "--data", t.TempDir()}, func(string) string { return "" }, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "--nats") {
		t.Fatalf("got %v", err)
	}
}
