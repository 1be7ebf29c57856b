package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/cachepool/cachepool/system"
)

// envName is a flag's environment twin: max-nodes → CACHEPOOL_MAX_NODES.
func envName(flagName string) string {
	return "CACHEPOOL_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parse parses args, then fills every flag not given on the command line
// from its environment twin. Errors name the flag or the variable.
func parse(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		if v := getenv(envName(f.Name)); v != "" {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %v", envName(f.Name), v, err))
			}
		}
	})
	if len(errs) > 0 {
		return usageError{errors.Join(errs...).Error()}
	}
	return nil
}

// byteSize is a flag value like 8MiB, 512KiB or 1048576.
type byteSize struct{ p *int64 }

func (b byteSize) String() string {
	if b.p == nil {
		return ""
	}
	return formatBytes(*b.p)
}

func (b byteSize) Set(s string) error {
	n, err := parseBytes(s)
	if err != nil {
		return err
	}
	*b.p = n
	return nil
}

func parseBytes(s string) (int64, error) {
	s = strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			f, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), 64)
			if err != nil || f < 0 {
				return 0, fmt.Errorf("bad size %q (examples: 8MiB, 512KiB, 1048576)", s)
			}
			return int64(f * float64(u.mult)), nil
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad size %q (examples: 8MiB, 512KiB, 1048576)", s)
	}
	return n, nil
}

func formatBytes(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return strconv.FormatInt(n, 10)
}

// natsFlags registers the NATS connection flags shared by serve and the admin commands.
func natsFlags(fs *flag.FlagSet, cfg *system.Config) {
	fs.StringVar(&cfg.NATSURL, "nats", cfg.NATSURL, "NATS server URL (user:password@ or token@ in the URL are honoured)")
	fs.StringVar(&cfg.NATS.CredsFile, "nats-creds", "", "NATS credentials file")
	fs.StringVar(&cfg.NATS.NKeySeed, "nats-nkey", "", "NATS nkey seed file")
	fs.StringVar(&cfg.NATS.CAFile, "nats-ca", "", "CA certificate for TLS to NATS")
	fs.StringVar(&cfg.NATS.CertFile, "nats-cert", "", "client certificate for TLS to NATS")
	fs.StringVar(&cfg.NATS.KeyFile, "nats-key", "", "client key for TLS to NATS")
}

// systemFlags registers every flag of up and serve.
func systemFlags(fs *flag.FlagSet, cfg *system.Config) {
	fs.StringVar(&cfg.DataDir, "data", cfg.DataDir, "data directory (JetStream store, SQLite file, blobs)")
	fs.StringVar(&cfg.HTTPAddr, "http", cfg.HTTPAddr, "HTTP listen address of the edge (dashboard and API)")
	fs.IntVar(&cfg.Nodes, "nodes", cfg.Nodes, "initial number of cache nodes (the stored pool size wins on restart)")
	fs.IntVar(&cfg.MaxNodes, "max-nodes", cfg.MaxNodes, "upper bound of the pool size")
	fs.IntVar(&cfg.Partitions, "partitions", cfg.Partitions, "partition count P (a power of two)")
	fs.Var(byteSize{&cfg.MaxImageBytes}, "max-image-size", "largest image accepted (e.g. 8MiB)")
	fs.StringVar(&cfg.AdminToken, "admin-token", "", "when set, mutating endpoints require Authorization: Bearer <token>")
	fs.StringVar(&cfg.Provisioner, "provisioner", cfg.Provisioner, "how cache nodes start: local (in this process), exec (one process each) or standby (registered nodes)")
	fs.StringVar(&cfg.BlobStore, "blob-store", cfg.BlobStore, `image storage: "file" (in the data dir) or s3://bucket?region=&endpoint=&path_style=true`)
	fs.StringVar(&cfg.Database, "database", cfg.Database, `key metadata: "sqlite" (in the data dir) or a postgres:// URL`)
	fs.Float64Var(&cfg.CapacityMB, "capacity", cfg.CapacityMB, "initial cache capacity of each node, in MB")
	fs.StringVar(&cfg.Policy, "policy", cfg.Policy, "initial replacement policy: lru or random")
	fs.IntVar(&cfg.Replicas, "replicas", cfg.Replicas, "JetStream replicas of streams and buckets (3 on a 3-server cluster)")
	fs.DurationVar(&cfg.ReportInterval, "report-interval", cfg.ReportInterval, "how often nodes report statistics")
	fs.DurationVar(&cfg.Heartbeat, "heartbeat", cfg.Heartbeat, "node heartbeat interval (3 missed = failed)")
	fs.DurationVar(&cfg.StatsBucket, "stats-bucket", cfg.StatsBucket, "statistics bucket length")
	fs.IntVar(&cfg.StatsBuckets, "stats-buckets", cfg.StatsBuckets, "statistics buckets kept")
	fs.DurationVar(&cfg.ScalerTick, "scaler-tick", cfg.ScalerTick, "autoscaler decision interval")
	fs.DurationVar(&cfg.ScalerCooldown, "scaler-cooldown", cfg.ScalerCooldown, "no scaler decision this long after a resize (0: one stats bucket)")
	fs.BoolVar(&cfg.Migration, "migration", cfg.Migration, "move cached keys to their new owner on a resize")
	fs.DurationVar(&cfg.LeaseTTL, "lease-ttl", cfg.LeaseTTL, "manager and scaler lease: a standby takes over this long after the active one dies (0: 3s)")
}

func printDefaults(w io.Writer, fs *flag.FlagSet) {
	fs.SetOutput(w)
	fs.PrintDefaults()
}
