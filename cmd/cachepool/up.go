package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/cachepool/cachepool/system"
)

// urlFile is where `up` leaves its NATS URL for the admin commands.
const urlFile = "nats.url"

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{fmt.Sprintf("--log-level %q: use debug, info, warn or error", level)}
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usageError{fmt.Sprintf("--log-format %q: use text or json", format)}
}

func cmdUp(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg := system.Defaults()
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	fs.SetOutput(stderr)
	systemFlags(fs, &cfg)
	fs.StringVar(&cfg.NATSURL, "nats", "", "use this NATS server instead of the embedded one")
	fs.StringVar(&cfg.NATSListen, "nats-listen", "", "embedded NATS listen address (default 127.0.0.1:4222, or a free port when 4222 is taken)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	if err := parse(fs, args, getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("up takes no arguments, got %q", strings.Join(fs.Args(), " "))}
	}
	log, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return usageError{err.Error()}
	}
	log.Info("starting cachepool", "data", cfg.DataDir, "http", cfg.HTTPAddr, "nodes", cfg.Nodes, "provisioner", cfg.Provisioner)
	err = system.Up(ctx, cfg, log, func(info system.Info) {
		_ = os.WriteFile(filepath.Join(cfg.DataDir, urlFile), []byte(info.NATSURL+"\n"), 0o644)
		fmt.Fprintf(stdout, `
cachepool is up.
  Dashboard:     %s/
  API:           %s/api/list_keys
  NATS:          %s
  Watch events:  %s
  Admin:         cachepool pool status --nats %s
Press Ctrl-C to stop.
`, info.HTTPURL, info.HTTPURL, info.NATSURL, info.NATSCommand(), info.NATSURL)
	})
	if err != nil {
		return err
	}
	log.Info("cachepool stopped cleanly")
	return nil
}

func cmdServe(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return usageError{fmt.Sprintf("serve needs a service: one of %s", strings.Join(system.Services, ", "))}
	}
	service := args[0]
	cfg := system.Defaults()
	fs := flag.NewFlagSet("serve "+service, flag.ContinueOnError)
	fs.SetOutput(stderr)
	systemFlags(fs, &cfg)
	natsFlags(fs, &cfg)
	id := fs.String("id", "", "cache node id (serve cachenode)")
	fs.BoolVar(&cfg.Standby, "standby", false, "cache node waits to be activated by the manager (serve cachenode)")
	fs.StringVar(&cfg.Executable, "executable", "", "cachepool binary for the exec provisioner (default: this one)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	if err := parse(fs, args[1:], getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	cfg.NodeID = nodeID(*id)
	log, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return usageError{err.Error()}
	}
	return system.Serve(ctx, service, cfg, log)
}
