package contracts

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

var at = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func ptr(f float64) *float64 { return &f }

// goldenCases holds one example of every message on the wire. A failing
// comparison means the wire format changed: that is a breaking change
// unless it only adds optional fields.
func goldenCases() map[string]any {
	return map[string]any{
		"partition_table": &PartitionTable{Epoch: 3, Partitions: 4, Owners: []NodeID{"node-1", "node-2", "node-1", "node-2"},
			Previous: []NodeID{"", "node-1", "", ""}, Nodes: []NodeID{"node-1", "node-2"}, UpdatedAt: at},
		"cache_config":      &CacheConfig{CapacityMB: 64, Policy: PolicyLRU},
		"put_reply":         &PutReply{Stored: false, Version: 7, Reason: "newer version held"},
		"invalidate":        &InvalidateRequest{Keys: []string{"cat", "dog"}, BelowOrAt: 4},
		"node_report":       &NodeReport{EventID: "e1", OccurredAt: at, Node: "node-1", Incarnation: "i1", Seq: 9, IntervalMS: 5000, Delta: Counters{Gets: 10, Hits: 7, Misses: 3, Puts: 2, Evictions: 1}, Items: 5, Bytes: 5000},
		"heartbeat":         &Heartbeat{Node: "node-1", Incarnation: "i1", OccurredAt: at, Items: 5, Bytes: 5000},
		"node_announcement": &NodeAnnouncement{EventID: "e2", OccurredAt: at, Node: "node-3", Incarnation: "i3", Standby: true},
		"handoff":           &HandoffRequest{RequestID: "r1", Target: "node-5", Partitions: []int{1, 7}, PartitionCount: 256, BatchBytes: 1 << 20, Delete: true},
		"store_put_reply":   &StorePutReply{Key: "cat", Version: 2, Bytes: 1024},
		"clear_all_reply":   &ClearAllReply{Rows: 3, Objects: 3, CachedItems: 2},
		"resize_command":    &ResizeCommand{RequestID: "r2", Change: 1, Source: SourceManual, RequestedAt: at},
		"resize_request":    &ResizeRequest{Change: "increase", WaitMS: 5000},
		"request_state": &ResizeRequestState{EventID: "e3", OccurredAt: at, RequestID: "r2", Command: ResizeCommand{RequestID: "r2", Target: 3, Source: SourceScaler, RequestedAt: at},
			Status: StateRejected, Reason: "already at the maximum of 8 nodes", Sequence: 12, FromSize: 8, ToSize: 8,
			History: []StateChange{{State: StateQueued, At: at}, {State: StateRejected, At: at, Detail: "bound"}}},
		"mode_config":  &ModeConfig{Mode: ModeAutomatic, Params: DefaultAutoParams},
		"pool_status":  &PoolStatus{Size: 2, Target: 2, MaxNodes: 8, Mode: ModeConfig{Mode: ModeManual, Params: DefaultAutoParams}, Config: CacheConfig{CapacityMB: 64, Policy: PolicyRandom}, Epoch: 4, Partitions: 256, Nodes: []NodeInfo{{ID: "node-1", State: NodeActive, Partitions: 128, Items: 3, Bytes: 300, LastSeen: at}}},
		"migration":    &MigrationProgress{EventID: "e4", OccurredAt: at, RequestID: "r2", Epoch: 5, Partitions: 51, MovedKeys: 10, TotalKeys: 20, MovedBytes: 1000, TotalBytes: 2000},
		"stats_series": &StatsSeries{BucketMS: 60000, MissRate: []*float64{ptr(0.25), nil}, HitRate: []*float64{ptr(0.75), nil}, Items: []int64{3, 3}, Bytes: []int64{300, 300}, RequestsPerMinute: []float64{4, 0}, Nodes: []int{1, 1}, Timestamps: []time.Time{at, at.Add(time.Minute)}},
		"decision":     &ScalerDecision{EventID: "e5", OccurredAt: at, Action: "grow", Reason: "miss rate 0.9 above 0.6", MissRate: ptr(0.9), Nodes: 2, Target: 4, RequestID: "r9"},
	}
}

func TestGoldenRoundTrip(t *testing.T) {
	for name, msg := range goldenCases() {
		t.Run(name, func(t *testing.T) {
			got, err := json.MarshalIndent(msg, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			path := filepath.Join("testdata", name+".json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("missing golden file (run go test -update): %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("wire format changed for %s:\n got %s\nwant %s", name, got, want)
			}
			back := reflect.New(reflect.TypeOf(msg).Elem()).Interface()
			if err := json.Unmarshal(want, back); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, msg) {
				t.Fatalf("round trip differs:\n got %#v\nwant %#v", back, msg)
			}
			if v, ok := back.(interface{ Validate() error }); ok {
				if err := v.Validate(); err != nil {
					t.Fatalf("golden example does not validate: %v", err)
				}
			}
		})
	}
}
