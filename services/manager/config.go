package manager

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cachepool/cachepool/contracts"
)

// Provisioners.
const (
	// ProvisionerLocal starts nodes through the Launcher inside the same
	// process (cachenode.Run in a goroutine).
	ProvisionerLocal = "local"
	// ProvisionerExec starts nodes through the Launcher as child processes.
	ProvisionerExec = "exec"
	// ProvisionerStandby launches nothing: nodes started by anyone announce
	// themselves with Standby=true, and the manager activates and
	// deactivates them.
	ProvisionerStandby = "standby"
)

// Launcher starts and stops cache nodes for the local and exec provisioners.
//
// Launch returns once the node is starting; the manager then waits for the
// node's readiness announcement (or a successful stats request), never for a
// fixed time. Launch of an id that is already running may fail or be a
// no-op: the manager only launches ids that do not answer. Terminate must be
// safe to call for a node that is already gone. Both are called from one
// goroutine at a time per node id, but for different ids concurrently.
type Launcher interface {
	Launch(ctx context.Context, id contracts.NodeID, cache contracts.CacheConfig) error
	Terminate(ctx context.Context, id contracts.NodeID) error
}

// Config configures the manager. Zero fields take the defaults listed.
type Config struct {
	// Partitions is P, a power of two (default 256). It applies when the
	// table is first created; afterwards the stored table's P wins.
	Partitions int
	// MaxNodes bounds the pool size (default 8); checked when a command runs.
	MaxNodes int
	// InitialNodes is the pool size on the very first start (default 1);
	// later the stored target wins.
	InitialNodes int
	// Heartbeat is the nodes' heartbeat interval (default 2s). A table node
	// silent for 3 heartbeats has failed.
	Heartbeat time.Duration
	// Provisioner is local (default), exec or standby.
	Provisioner string
	// Launcher starts and stops nodes; required for local and exec.
	Launcher Launcher
	// Replicas of the stream and buckets (default 1).
	Replicas int
	// DefaultCache is the cache config on the very first start (default
	// 64 MB, lru); later the stored config wins.
	DefaultCache contracts.CacheConfig
	// Migration moves entries of moved partitions to their new owner
	// (default true). Off, old owners just drop them (for benchmarks).
	Migration *bool
	// StartTimeout bounds the wait for a launched node's readiness (default 30s).
	StartTimeout time.Duration
	// HandoffTimeout bounds one handoff request (default 5m).
	HandoffTimeout time.Duration
	// AckWait is the resize consumer's ack wait (default 30s); a command at
	// work signals progress every AckWait/3, so this only bounds how long a
	// command held by a crashed manager waits before redelivery.
	AckWait time.Duration
	// LeaseTTL is the manager lease's TTL (default bus.DefaultLeaseTTL,
	// whole seconds): a standby takes over within about this long after the
	// active manager dies, at once after it stops cleanly.
	LeaseTTL time.Duration
}

// Bool returns a pointer to b, for Config.Migration.
func Bool(b bool) *bool { return &b }

// Defaults.
const (
	DefaultHeartbeat      = 2 * time.Second
	DefaultStartTimeout   = 30 * time.Second
	DefaultHandoffTimeout = 5 * time.Minute
	DefaultAckWait        = 30 * time.Second
	// FailedAfterHeartbeats is how many heartbeat intervals of silence make a node failed.
	FailedAfterHeartbeats = 3
)

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.Partitions == 0 {
		c.Partitions = contracts.DefaultPartitions
	}
	if c.MaxNodes == 0 {
		c.MaxNodes = contracts.DefaultMaxNodes
	}
	if c.InitialNodes == 0 {
		c.InitialNodes = 1
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = DefaultHeartbeat
	}
	if c.Provisioner == "" {
		c.Provisioner = ProvisionerLocal
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.DefaultCache == (contracts.CacheConfig{}) {
		c.DefaultCache = contracts.CacheConfig{CapacityMB: contracts.DefaultCapacityMB, Policy: contracts.DefaultPolicy}
	}
	if c.Migration == nil {
		c.Migration = Bool(true)
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = DefaultStartTimeout
	}
	if c.HandoffTimeout == 0 {
		c.HandoffTimeout = DefaultHandoffTimeout
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	return c
}

// migrate reports whether warm migration is on.
func (c Config) migrate() bool { return c.Migration == nil || *c.Migration }

// Validate reports every problem of c (after defaults) at once.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if err := contracts.ValidatePartitions(c.Partitions); err != nil {
		errs = append(errs, err)
	}
	if c.MaxNodes < 1 {
		errs = append(errs, fmt.Errorf("max nodes must be at least 1, got %d", c.MaxNodes))
	}
	if c.InitialNodes < 1 || c.InitialNodes > c.MaxNodes {
		errs = append(errs, fmt.Errorf("initial nodes must be within 1..%d, got %d", c.MaxNodes, c.InitialNodes))
	}
	if c.MaxNodes > c.Partitions {
		errs = append(errs, fmt.Errorf("max nodes (%d) must not exceed partitions (%d)", c.MaxNodes, c.Partitions))
	}
	if c.Heartbeat < 0 {
		errs = append(errs, fmt.Errorf("heartbeat must be positive, got %v", c.Heartbeat))
	}
	switch c.Provisioner {
	case ProvisionerLocal, ProvisionerExec:
		if c.Launcher == nil {
			errs = append(errs, fmt.Errorf("provisioner %q needs a launcher", c.Provisioner))
		}
	case ProvisionerStandby:
	default:
		errs = append(errs, fmt.Errorf("provisioner must be %q, %q or %q, got %q", ProvisionerLocal, ProvisionerExec, ProvisionerStandby, c.Provisioner))
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("replicas must be within 1..5, got %d", c.Replicas))
	}
	if err := c.DefaultCache.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("default cache: %w", err))
	}
	if c.StartTimeout < 0 || c.HandoffTimeout < 0 || c.AckWait < 0 || c.LeaseTTL < 0 {
		errs = append(errs, errors.New("timeouts must be positive"))
	}
	return errors.Join(errs...)
}
