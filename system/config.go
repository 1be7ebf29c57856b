package system

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cachepool/cachepool/contracts"
)

// Config is everything `cachepool up` and `cachepool serve` can be told.
// The command fills it from flags and their CACHEPOOL_* twins.
type Config struct {
	DataDir  string // JetStream store, SQLite file and blob folder
	HTTPAddr string // the edge's listen address

	NATSURL    string // an external NATS server; empty: run the embedded one
	NATSListen string // the embedded server's listen address ("" : 127.0.0.1:4222, or a free port when taken)
	NATS       NATSAuth

	Nodes         int // initial pool size
	MaxNodes      int
	Partitions    int
	MaxImageBytes int64
	AdminToken    string
	Provisioner   string // local, exec or standby
	BlobStore     string // "file" or "s3://bucket?..."
	Database      string // "sqlite" or "postgres://..."
	CapacityMB    float64
	Policy        string
	Replicas      int

	ReportInterval time.Duration
	Heartbeat      time.Duration
	StatsBucket    time.Duration
	StatsBuckets   int
	ScalerTick     time.Duration
	ScalerCooldown time.Duration
	Migration      bool
	// LeaseTTL is how long a dead active manager or scaler keeps its lease
	// before a standby takes over (0: bus.DefaultLeaseTTL).
	LeaseTTL time.Duration

	// NodeID names the node for `serve cachenode`.
	NodeID contracts.NodeID
	// Standby makes `serve cachenode` register and wait for activation.
	Standby bool
	// Executable is the cachepool binary the exec provisioner starts
	// (default: this process's own executable).
	Executable string
}

// NATSAuth holds the standard NATS security options for external servers.
// User and password or a token may also be given in the URL.
type NATSAuth struct {
	CredsFile string
	NKeySeed  string // path of an nkey seed file
	CAFile    string
	CertFile  string
	KeyFile   string
}

// Defaults returns the documented defaults.
func Defaults() Config {
	return Config{
		DataDir:        "./data",
		HTTPAddr:       "127.0.0.1:8080",
		Nodes:          1,
		MaxNodes:       contracts.DefaultMaxNodes,
		Partitions:     contracts.DefaultPartitions,
		MaxImageBytes:  contracts.DefaultMaxImageBytes,
		Provisioner:    "local",
		BlobStore:      "file",
		Database:       "sqlite",
		CapacityMB:     contracts.DefaultCapacityMB,
		Policy:         contracts.DefaultPolicy,
		Replicas:       1,
		ReportInterval: 5 * time.Second,
		Heartbeat:      2 * time.Second,
		StatsBucket:    time.Minute,
		StatsBuckets:   30,
		ScalerTick:     time.Minute,
		Migration:      true,
	}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data must not be empty"))
	}
	if c.MaxNodes < 1 {
		errs = append(errs, fmt.Errorf("--max-nodes must be at least 1, got %d", c.MaxNodes))
	}
	if c.Nodes < 1 || c.Nodes > c.MaxNodes {
		errs = append(errs, fmt.Errorf("--nodes must be within 1..%d (--max-nodes), got %d", c.MaxNodes, c.Nodes))
	}
	if err := contracts.ValidatePartitions(c.Partitions); err != nil {
		errs = append(errs, fmt.Errorf("--partitions: %w", err))
	}
	if c.MaxImageBytes < 1 || c.MaxImageBytes > 48<<20 {
		errs = append(errs, fmt.Errorf("--max-image-size must be within 1 byte..48MiB, got %d", c.MaxImageBytes))
	}
	switch c.Provisioner {
	case "local", "exec", "standby":
	default:
		errs = append(errs, fmt.Errorf("--provisioner must be local, exec or standby, got %q", c.Provisioner))
	}
	if c.BlobStore != "file" && !strings.HasPrefix(c.BlobStore, "s3://") {
		errs = append(errs, fmt.Errorf("--blob-store must be \"file\" or an s3:// URL, got %q", c.BlobStore))
	}
	if c.Database != "sqlite" && !strings.HasPrefix(c.Database, "postgres://") && !strings.HasPrefix(c.Database, "postgresql://") {
		errs = append(errs, fmt.Errorf("--database must be \"sqlite\" or a postgres:// URL, got %q", c.Database))
	}
	if err := (contracts.CacheConfig{CapacityMB: c.CapacityMB, Policy: c.Policy}).Validate(); err != nil {
		errs = append(errs, fmt.Errorf("--capacity/--policy: %w", err))
	}
	for name, d := range map[string]time.Duration{
		"--report-interval": c.ReportInterval, "--heartbeat": c.Heartbeat,
		"--stats-bucket": c.StatsBucket, "--scaler-tick": c.ScalerTick,
	} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %v", name, d))
		}
	}
	if c.StatsBuckets < 1 {
		errs = append(errs, fmt.Errorf("--stats-buckets must be at least 1, got %d", c.StatsBuckets))
	}
	if c.LeaseTTL < 0 {
		errs = append(errs, fmt.Errorf("--lease-ttl must not be negative, got %v", c.LeaseTTL))
	}
	if c.ScalerCooldown < 0 {
		errs = append(errs, fmt.Errorf("--scaler-cooldown must not be negative, got %v", c.ScalerCooldown))
	}
	return errors.Join(errs...)
}

func (c Config) cooldown() time.Duration {
	if c.ScalerCooldown > 0 {
		return c.ScalerCooldown
	}
	return c.StatsBucket
}

func (c Config) cache() contracts.CacheConfig {
	return contracts.CacheConfig{CapacityMB: c.CapacityMB, Policy: contracts.NormalizePolicy(c.Policy)}
}
