package system

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/contracts"
	"github.com/cachepool/cachepool/services/cachenode"
	"github.com/cachepool/cachepool/services/edge"
	"github.com/cachepool/cachepool/services/imagestore"
	"github.com/cachepool/cachepool/services/manager"
	"github.com/cachepool/cachepool/services/scaler"
	"github.com/cachepool/cachepool/services/stats"
	"github.com/nats-io/nats.go"
)

func storeConfig(c Config) imagestore.Config {
	return imagestore.Config{DataDir: c.DataDir, Blob: c.BlobStore, Database: c.Database, MaxImageBytes: c.MaxImageBytes}
}

func managerConfig(c Config, l manager.Launcher) manager.Config {
	return manager.Config{
		Partitions: c.Partitions, MaxNodes: c.MaxNodes, InitialNodes: c.Nodes, Heartbeat: c.Heartbeat,
		Provisioner: c.Provisioner, Launcher: l, Replicas: c.Replicas, DefaultCache: c.cache(), Migration: manager.Bool(c.Migration), LeaseTTL: c.LeaseTTL,
	}
}

func statsConfig(c Config) stats.Config {
	return stats.Config{Bucket: c.StatsBucket, Buckets: c.StatsBuckets, Replicas: c.Replicas}
}

func scalerConfig(c Config) scaler.Config {
	return scaler.Config{Tick: c.ScalerTick, Cooldown: c.cooldown(), MaxNodes: c.MaxNodes, Bucket: c.StatsBucket, Replicas: c.Replicas, LeaseTTL: c.LeaseTTL}
}

func edgeConfig(c Config) edge.Config {
	return edge.Config{Addr: c.HTTPAddr, MaxImageBytes: c.MaxImageBytes, AdminToken: c.AdminToken}
}

func nodeConfig(c Config) cachenode.Config {
	return cachenode.Config{ID: c.NodeID, CapacityMB: c.CapacityMB, Policy: c.Policy,
		ReportInterval: c.ReportInterval, HeartbeatInterval: c.Heartbeat, Standby: c.Standby}
}

// Services lists what `cachepool serve` can run.
var Services = []string{"cachenode", "store", "manager", "stats", "scaler", "edge"}

// Serve runs one service against cfg.NATSURL until ctx ends.
func Serve(ctx context.Context, service string, cfg Config, log *slog.Logger) error {
	if cfg.NATSURL == "" {
		return fmt.Errorf("serve %s: --nats is required", service)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	nc, err := bus.Connect(ctx, cfg.NATSURL, "cachepool-"+service, log, cfg.NATS.options()...)
	if err != nil {
		return err
	}
	defer bus.Drain(nc, stopTimeout)
	if err := bus.CheckMaxPayload(nc, cfg.MaxImageBytes); err != nil {
		return err
	}
	switch service {
	case "cachenode", "node":
		return cachenode.Run(ctx, nc, nodeConfig(cfg), log.With("service", contracts.ServiceNode))
	case "store", "imagestore":
		return imagestore.Run(ctx, nc, storeConfig(cfg), log)
	case "manager":
		var l manager.Launcher
		if cfg.Provisioner == "exec" {
			el, err := newExecLauncher(cfg, cfg.NATSURL, log)
			if err != nil {
				return err
			}
			defer el.stopAll(context.Background())
			l = el
		} else if cfg.Provisioner == "local" {
			ll := newLocalLauncher(cfg, func(name string) (*nats.Conn, error) {
				return bus.Connect(ctx, cfg.NATSURL, name, log, cfg.NATS.options()...)
			}, log)
			defer ll.stopAll(context.Background())
			l = ll
		}
		return manager.Run(ctx, nc, managerConfig(cfg, l), log)
	case "stats":
		return stats.Run(ctx, nc, statsConfig(cfg), log)
	case "scaler":
		return scaler.Run(ctx, nc, scalerConfig(cfg), log)
	case "edge":
		return edge.Run(ctx, nc, edgeConfig(cfg), log.With("service", "cachepool-edge"))
	}
	return fmt.Errorf("serve: unknown service %q (one of %v)", service, Services)
}

// options turns the security settings into nats options.
// NATSOptions turns the security settings into nats options.
func NATSOptions(a NATSAuth) []nats.Option { return a.options() }

func (a NATSAuth) options() []nats.Option {
	var opts []nats.Option
	if a.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(a.CredsFile))
	}
	if a.NKeySeed != "" {
		if o, err := nats.NkeyOptionFromSeed(a.NKeySeed); err == nil {
			opts = append(opts, o)
		} else {
			opts = append(opts, func(*nats.Options) error { return fmt.Errorf("--nats-nkey: %w", err) })
		}
	}
	if a.CAFile != "" {
		opts = append(opts, nats.RootCAs(a.CAFile))
	}
	if a.CertFile != "" || a.KeyFile != "" {
		opts = append(opts, nats.ClientCert(a.CertFile, a.KeyFile))
	}
	return opts
}
