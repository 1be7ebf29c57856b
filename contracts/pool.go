package contracts

import (
	"errors"
	"fmt"
	"time"
)

// Pool modes.
const (
	ModeManual    = "manual"
	ModeAutomatic = "automatic"
)

// Sources of a resize command.
const (
	SourceManual = "manual" // the HTTP API, the dashboard, the CLI
	SourceScaler = "scaler"
)

// DefaultMaxNodes is the default upper bound of the pool size.
const DefaultMaxNodes = 8

// AutoParams are the automatic-mode parameters.
type AutoParams struct {
	MaxMissRate float64 `json:"max_miss_rate_threshold"`
	MinMissRate float64 `json:"min_miss_rate_threshold"`
	ExpandRatio float64 `json:"expand_ratio"`
	ShrinkRatio float64 `json:"shrink_ratio"`
}

// DefaultAutoParams are used until an operator sets others.
var DefaultAutoParams = AutoParams{MaxMissRate: 0.6, MinMissRate: 0.4, ExpandRatio: 2, ShrinkRatio: 0.5}

// Validate enforces 0 ≤ min < max ≤ 1, expand_ratio > 1, 0 < shrink_ratio < 1,
// naming every offending field.
func (p AutoParams) Validate() error {
	var errs []error
	if p.MinMissRate < 0 || p.MinMissRate > 1 {
		errs = append(errs, fmt.Errorf("min_miss_rate_threshold must be within 0..1, got %v", p.MinMissRate))
	}
	if p.MaxMissRate < 0 || p.MaxMissRate > 1 {
		errs = append(errs, fmt.Errorf("max_miss_rate_threshold must be within 0..1, got %v", p.MaxMissRate))
	}
	if !(p.MinMissRate < p.MaxMissRate) {
		errs = append(errs, fmt.Errorf("min_miss_rate_threshold (%v) must be below max_miss_rate_threshold (%v)", p.MinMissRate, p.MaxMissRate))
	}
	if !(p.ExpandRatio > 1) {
		errs = append(errs, fmt.Errorf("expand_ratio must be greater than 1, got %v", p.ExpandRatio))
	}
	if !(p.ShrinkRatio > 0 && p.ShrinkRatio < 1) {
		errs = append(errs, fmt.Errorf("shrink_ratio must be between 0 and 1 (exclusive), got %v", p.ShrinkRatio))
	}
	return errors.Join(errs...)
}

// ModeConfig is the pool mode and the stored automatic parameters. In manual
// mode the parameters are kept (not erased) for the next switch to automatic.
type ModeConfig struct {
	Mode   string     `json:"resize_pool_option"`
	Params AutoParams `json:"resize_pool_parameters"`
}

// SetModeRequest switches the mode without touching the parameters.
type SetModeRequest struct {
	Mode string `json:"mode"`
}

// Validate requires a known mode.
func (r SetModeRequest) Validate() error {
	if r.Mode != ModeManual && r.Mode != ModeAutomatic {
		return fmt.Errorf("mode must be %q or %q, got %q", ModeManual, ModeAutomatic, r.Mode)
	}
	return nil
}

// ResizeCommand is one entry of the resize queue (stream StreamResize,
// subject PoolResizeCommand, Nats-Msg-Id = RequestID). Exactly one of Change
// (+1 or -1) and Target (absolute size) is set.
type ResizeCommand struct {
	RequestID   string    `json:"request_id"`
	Change      int       `json:"change,omitempty"`
	Target      int       `json:"target,omitempty"`
	Source      string    `json:"source"`
	Reason      string    `json:"reason,omitempty"`
	RequestedAt time.Time `json:"requested_at"`
}

// Validate checks the id and that the command asks for one thing.
func (c ResizeCommand) Validate() error {
	var errs []error
	if c.RequestID == "" {
		errs = append(errs, errors.New("request_id is empty"))
	}
	switch {
	case c.Change != 0 && c.Target != 0:
		errs = append(errs, errors.New("set change or target, not both"))
	case c.Change == 0 && c.Target == 0:
		errs = append(errs, errors.New("set change (+1 or -1) or target (≥ 1)"))
	case c.Change != 0 && c.Change != 1 && c.Change != -1:
		errs = append(errs, fmt.Errorf("change must be +1 or -1, got %d", c.Change))
	case c.Target < 0:
		errs = append(errs, fmt.Errorf("target must be at least 1, got %d", c.Target))
	}
	return errors.Join(errs...)
}

// ResizeRequest asks the manager to queue a resize. Change is "increase" or
// "decrease" (the seed's words), or Target an absolute size.
type ResizeRequest struct {
	RequestID string `json:"request_id,omitempty"` // generated when empty
	Change    string `json:"change,omitempty"`
	Target    int    `json:"target,omitempty"`
	Source    string `json:"source,omitempty"` // default manual
	// WaitMS > 0 makes the reply wait until the request is terminal (or the wait ends).
	WaitMS int64 `json:"wait_ms,omitempty"`
}

// Validate checks the change word and the target.
func (r ResizeRequest) Validate() error {
	switch {
	case r.Change != "" && r.Target != 0:
		return errors.New("set change or target, not both")
	case r.Change == "" && r.Target == 0:
		return errors.New(`change must be "increase" or "decrease"`)
	case r.Change != "" && r.Change != "increase" && r.Change != "decrease":
		return fmt.Errorf(`change must be "increase" or "decrease", got %q`, r.Change)
	case r.Target < 0:
		return fmt.Errorf("target must be at least 1, got %d", r.Target)
	}
	return nil
}

// Resize request states. Queued and Running are transient; the rest are terminal.
const (
	StateQueued   = "queued"
	StateRunning  = "running"
	StateApplied  = "applied"
	StateRejected = "rejected"
	StateFailed   = "failed"
)

// Terminal reports whether a state is final.
func Terminal(state string) bool {
	return state == StateApplied || state == StateRejected || state == StateFailed
}

// StateChange is one entry of a request's history.
type StateChange struct {
	State  string    `json:"state"`
	At     time.Time `json:"at"`
	Detail string    `json:"detail,omitempty"`
}

// ResizeRequestState is a resize request's status and history, stored in
// BucketRequests and evented on EvtRequest at every change.
type ResizeRequestState struct {
	EventID    string        `json:"event_id,omitempty"`
	OccurredAt time.Time     `json:"occurred_at"`
	RequestID  string        `json:"request_id"`
	Command    ResizeCommand `json:"command"`
	Status     string        `json:"status"`
	Reason     string        `json:"reason,omitempty"`
	Sequence   uint64        `json:"sequence,omitempty"` // stream sequence once queued
	FromSize   int           `json:"from_size,omitempty"`
	ToSize     int           `json:"to_size,omitempty"`
	History    []StateChange `json:"history"`
}

// ResizeRequestList is the recent requests, newest first.
type ResizeRequestList struct {
	Requests []ResizeRequestState `json:"requests"`
}

// RequestLookup asks for one request's state.
type RequestLookup struct {
	RequestID string `json:"request_id"`
	// WaitMS > 0 waits until the request is terminal or the wait ends.
	WaitMS int64 `json:"wait_ms,omitempty"`
}

// Validate requires the id.
func (r RequestLookup) Validate() error {
	if r.RequestID == "" {
		return errors.New("request_id is empty")
	}
	return nil
}

// Node states in the pool.
const (
	NodeStarting = "starting"
	NodeActive   = "active"
	NodeDraining = "draining"
	NodeStandby  = "standby"
	NodeFailed   = "failed"
)

// NodeInfo describes one node as the manager sees it.
type NodeInfo struct {
	ID         NodeID    `json:"id"`
	State      string    `json:"state"`
	Partitions int       `json:"partitions"`
	Items      int64     `json:"items"`
	Bytes      int64     `json:"bytes"`
	LastSeen   time.Time `json:"last_seen,omitempty"`
	Provider   string    `json:"provider,omitempty"`
}

// PoolStatus is the manager's view of the pool.
type PoolStatus struct {
	Size       int                `json:"size"` // active nodes
	Target     int                `json:"target"`
	MaxNodes   int                `json:"max_nodes"`
	Mode       ModeConfig         `json:"mode"`
	Config     CacheConfig        `json:"config"`
	Epoch      uint64             `json:"epoch"`
	Partitions int                `json:"partitions"`
	Nodes      []NodeInfo         `json:"nodes"`
	Migration  *MigrationProgress `json:"migration,omitempty"`
	Pending    int                `json:"pending"` // queued, not yet terminal requests
}

// PoolState is the manager's persisted state (KeyState in BucketPool).
type PoolState struct {
	Mode        ModeConfig  `json:"mode"`
	Config      CacheConfig `json:"config"`
	Target      int         `json:"target"`
	LastApplied uint64      `json:"last_applied_seq"`
	LastResize  time.Time   `json:"last_resize_at,omitempty"`
}

// MigrationProgress is evented while partitions move.
type MigrationProgress struct {
	EventID    string    `json:"event_id"`
	OccurredAt time.Time `json:"occurred_at"`
	RequestID  string    `json:"request_id"`
	Epoch      uint64    `json:"epoch"`
	Partitions int       `json:"partitions_moving"`
	MovedKeys  int64     `json:"moved_keys"`
	TotalKeys  int64     `json:"total_keys"`
	MovedBytes int64     `json:"moved_bytes"`
	TotalBytes int64     `json:"total_bytes"`
	Done       bool      `json:"done"`
}

// NodeEvent kinds.
const (
	NodeJoined    = "joined"
	NodeReady     = "ready"
	NodeLeft      = "left"
	NodeFailedEvt = "failed"
)

// NodeEvent is evented on EvtNode.
type NodeEvent struct {
	EventID    string    `json:"event_id"`
	OccurredAt time.Time `json:"occurred_at"`
	Node       NodeID    `json:"node"`
	Kind       string    `json:"kind"`
	Detail     string    `json:"detail,omitempty"`
}

// ConfigChanged is evented on EvtConfig when the mode, parameters or cache config change.
type ConfigChanged struct {
	EventID    string      `json:"event_id"`
	OccurredAt time.Time   `json:"occurred_at"`
	Mode       ModeConfig  `json:"mode"`
	Config     CacheConfig `json:"config"`
}

// Cleared is evented on EvtCleared.
type Cleared struct {
	EventID     string    `json:"event_id"`
	OccurredAt  time.Time `json:"occurred_at"`
	What        string    `json:"what"` // "cache" or "data"
	Rows        int64     `json:"rows"`
	Objects     int64     `json:"objects"`
	CachedItems int64     `json:"cached_items"`
}
