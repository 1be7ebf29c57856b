// Command cachepool runs the elastic image cache pool and administers it.
//
//	cachepool up [flags]                    everything in one process (embedded NATS by default)
//	cachepool serve <service> --nats URL    one service: cachenode, store, manager, stats, scaler, edge
//	cachepool pool status|nodes             the pool as the manager sees it
//	cachepool pool resize +1|-1|--to N      queue a resize and wait for its outcome
//	cachepool stats                         the per-minute series
//	cachepool config [--capacity MB] [--policy lru|random]
//	cachepool mode manual|automatic [--max-miss .. --min-miss .. --expand .. --shrink ..]
//	cachepool clear cache|data
//	cachepool events                        print every event as it happens
//	cachepool scaler decisions              the autoscaler's recent decisions
//
// Every flag has an environment twin: --max-nodes is CACHEPOOL_MAX_NODES.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintln(os.Stderr, "cachepool:", err)
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "cachepool:", err)
		os.Exit(1)
	}
}

// usageError is a mistake on the command line (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

const usage = `cachepool — an elastic in-memory image cache pool with a NATS control plane

Usage:
  cachepool up [flags]                   run everything in one process
  cachepool serve <service> [flags]      run one service (cachenode, store, manager, stats, scaler, edge)
  cachepool pool status                  pool size, mode, config and nodes
  cachepool pool nodes                   the node table
  cachepool pool resize +1|-1|--to N     queue a resize and wait for the outcome
  cachepool pool requests                recent resize requests
  cachepool stats                        per-minute statistics (last 30 minutes)
  cachepool config [--capacity MB] [--policy lru|random]
  cachepool mode manual|automatic [--max-miss F --min-miss F --expand F --shrink F]
  cachepool clear cache|data
  cachepool events [--all]               print events as they happen (Ctrl-C to stop)
  cachepool scaler decisions             the autoscaler's recent decisions

Run 'cachepool <command> -h' for the flags of a command. Every flag has an
environment twin: --max-nodes is CACHEPOOL_MAX_NODES.
`

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageError{"a command is required"}
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "up":
		return cmdUp(ctx, rest, getenv, stdout, stderr)
	case "serve":
		return cmdServe(ctx, rest, getenv, stderr)
	case "pool", "stats", "config", "mode", "clear", "events", "scaler":
		return cmdAdmin(ctx, cmd, rest, getenv, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return usageError{fmt.Sprintf("unknown command %q", cmd)}
}
