package cachenode_test

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/cachepool/cachepool/bus/bustest"
	"github.com/cachepool/cachepool/contracts"
	"github.com/cachepool/cachepool/services/cachenode"
)

func value(key string, version uint64, size int) []byte {
	v := bytes.Repeat([]byte{byte(version)}, size)
	copy(v, key)
	return v
}

// TestTwoNodesHandoffAndReports runs two nodes in one process on one
// connection, moves partitions from A to B, and checks the reports,
// heartbeats and announcements they publish.
func TestTwoNodesHandoffAndReports(t *testing.T) {
	srv := bustest.RunServer(t)
	nodeConn := bustest.Connect(t, srv) // shared by both nodes
	nc := bustest.Connect(t, srv)
	announced := collect[contracts.NodeAnnouncement](t, nc, contracts.NodeAnnounce)
	gone := collect[contracts.NodeAnnouncement](t, nc, contracts.NodeGone)
	beats := collect[contracts.Heartbeat](t, nc, contracts.NodeHeartbeatFilter())
	reports := collect[contracts.NodeReport](t, nc, contracts.NodeReportFilter())

	cfg := func(id contracts.NodeID) cachenode.Config {
		return cachenode.Config{ID: id, CapacityMB: 16, ReportInterval: 30 * time.Millisecond, HeartbeatInterval: 20 * time.Millisecond, Standby: id == "b"}
	}
	a := start(t, nodeConn, announced, cfg("a"))
	b := start(t, nodeConn, announced, cfg("b"))

	const p = 16
	moved := []int{1, 5, 9, 12}
	isMoved := func(k string) bool { return slices.Contains(moved, contracts.Partition(k, p)) }
	var keys []string
	newerOnB, olderOnB := map[string]bool{}, map[string]bool{}
	for i := range 400 {
		k := fmt.Sprintf("img-%03d", i)
		keys = append(keys, k)
		put(t, nc, "a", k, 2, value(k, 2, 2048))
		switch i % 10 {
		case 0:
			put(t, nc, "b", k, 9, value(k, 9, 100)) // a fresh upload the copy must not overwrite
			newerOnB[k] = true
		case 1:
			put(t, nc, "b", k, 1, value(k, 1, 100)) // an older copy the handoff replaces
			olderOnB[k] = true
		}
	}
	var wantMoved, wantSkipped int
	for _, k := range keys {
		if isMoved(k) {
			wantMoved++
			if newerOnB[k] {
				wantSkipped++
			}
		}
	}
	if wantMoved < 50 || wantSkipped == 0 {
		t.Fatalf("test data: %d keys in the moved partitions, %d newer on b", wantMoved, wantSkipped)
	}
	bBefore := request[contracts.NodeStats](t, nc, contracts.NodeStatsSubject("b"), nil)

	// bad handoffs: to itself, to nobody, bad partitions
	for _, tc := range []struct {
		req  contracts.HandoffRequest
		code int
	}{
		{contracts.HandoffRequest{Target: "a", Partitions: moved, PartitionCount: p}, contracts.CodeBadRequest},
		{contracts.HandoffRequest{Target: "nobody", Partitions: moved, PartitionCount: p}, contracts.CodeUnavailable},
		{contracts.HandoffRequest{Target: "b", Partitions: []int{16}, PartitionCount: p}, contracts.CodeBadRequest},
		{contracts.HandoffRequest{Target: "b", Partitions: moved, PartitionCount: 3}, contracts.CodeBadRequest},
	} {
		body := mustJSON(t, tc.req)
		if code := requestCode(nc, contracts.NodeHandoff("a"), body); code != tc.code {
			t.Errorf("handoff %s: code %d, want %d", body, code, tc.code)
		}
	}

	hr := request[contracts.HandoffReply](t, nc, contracts.NodeHandoff("a"), contracts.HandoffRequest{
		RequestID: "r1", Target: "b", Partitions: moved, PartitionCount: p, BatchBytes: 64 << 10, Delete: true,
	})
	if hr.Keys != wantMoved || hr.Skipped != wantSkipped || hr.Stored != wantMoved-wantSkipped || hr.Bytes != int64(wantMoved*(7+2048)) {
		t.Fatalf("handoff reply %+v, want keys %d skipped %d bytes %d", hr, wantMoved, wantSkipped, wantMoved*(7+2048))
	}
	if minBatches := wantMoved * 2048 / (64 << 10); hr.Batches <= minBatches {
		t.Fatalf("handoff used %d batches, want more than %d for 64 KiB batches", hr.Batches, minBatches)
	}

	for _, k := range keys {
		onA, errA := get(nc, "a", k)
		onB, errB := get(nc, "b", k)
		switch {
		case isMoved(k):
			if wireCode(errA) != contracts.CodeNotFound {
				t.Fatalf("%s moved but a still answers: %v", k, errA)
			}
			wantVersion := uint64(2)
			if newerOnB[k] {
				wantVersion = 9
			}
			if errB != nil {
				t.Fatalf("%s moved but b misses: %v", k, errB)
			}
			if v := onB.Header.Get(contracts.HdrVersion); v != strconv.FormatUint(wantVersion, 10) || !bytes.Equal(onB.Data, value(k, wantVersion, len(onB.Data))) {
				t.Fatalf("%s on b: version %s, want %d", k, v, wantVersion)
			}
		default:
			if errA != nil || onA.Header.Get(contracts.HdrVersion) != "2" {
				t.Fatalf("%s did not move but a lost it: %v", k, errA)
			}
			if (newerOnB[k] || olderOnB[k]) != (errB == nil) {
				t.Fatalf("%s did not move; b: %v", k, errB)
			}
		}
	}
	bAfter := request[contracts.NodeStats](t, nc, contracts.NodeStatsSubject("b"), nil)
	if bAfter.Counters.Puts != bBefore.Counters.Puts {
		t.Fatalf("migration counted as client puts on b: %d → %d", bBefore.Counters.Puts, bAfter.Counters.Puts)
	}

	// a handoff without delete keeps the entries; drop removes them
	aBefore := request[contracts.NodeStats](t, nc, contracts.NodeStatsSubject("a"), nil)
	hr2 := request[contracts.HandoffReply](t, nc, contracts.NodeHandoff("a"), contracts.HandoffRequest{
		Target: "b", Partitions: []int{0}, PartitionCount: p,
	})
	aMid := request[contracts.NodeStats](t, nc, contracts.NodeStatsSubject("a"), nil)
	if hr2.Keys == 0 || aMid.Items != aBefore.Items {
		t.Fatalf("copy handoff: %+v; a items %d → %d", hr2, aBefore.Items, aMid.Items)
	}
	dr := request[contracts.DropReply](t, nc, contracts.NodeDrop("a"), contracts.DropRequest{Partitions: []int{0}, PartitionCount: p})
	aAfter := request[contracts.NodeStats](t, nc, contracts.NodeStatsSubject("a"), nil)
	if dr.Items != int64(hr2.Keys) || dr.Bytes != hr2.Bytes || aAfter.Items != aBefore.Items-dr.Items || aAfter.Bytes != aBefore.Bytes-dr.Bytes {
		t.Fatalf("drop %+v after handoff %+v; a %+v → %+v", dr, hr2, aBefore, aAfter)
	}

	// stop both; the reports' deltas sum to the final counters
	final := map[contracts.NodeID]contracts.NodeStats{
		"a": request[contracts.NodeStats](t, nc, contracts.NodeStatsSubject("a"), nil),
		"b": request[contracts.NodeStats](t, nc, contracts.NodeStatsSubject("b"), nil),
	}
	a.stop(t)
	b.stop(t)
	bustest.Eventually(t, waitFor, func() error {
		for id, st := range final {
			var sum contracts.Counters
			var last contracts.NodeReport
			for _, r := range reports.all() {
				if r.Node == id {
					sum = add(sum, r.Delta)
					last = r
				}
			}
			if sum != st.Counters || last.Items != st.Items || last.Bytes != st.Bytes {
				return fmt.Errorf("node %s: deltas sum to %+v (last items %d bytes %d), want %+v", id, sum, last.Items, last.Bytes, st)
			}
		}
		if len(gone.all()) != 2 {
			return fmt.Errorf("%d stop announcements", len(gone.all()))
		}
		return nil
	})
	reports.check(t)
	beats.check(t)

	incarnation := map[contracts.NodeID]string{}
	for _, an := range announced.all() {
		incarnation[an.Node] = an.Incarnation
		if an.Standby != (an.Node == "b") || an.EventID == "" || an.OccurredAt.IsZero() {
			t.Errorf("announcement %+v", an)
		}
	}
	for _, g := range gone.all() {
		if g.Incarnation != incarnation[g.Node] {
			t.Errorf("stop announcement %+v, incarnation %q", g, incarnation[g.Node])
		}
	}
	for id := range final {
		var seqs []uint64
		for _, r := range reports.all() {
			if r.Node != id {
				continue
			}
			if err := r.Validate(); err != nil || r.Incarnation != incarnation[id] {
				t.Errorf("report %+v: %v", r, err)
			}
			seqs = append(seqs, r.Seq)
		}
		for i, s := range seqs {
			if s != uint64(i+1) {
				t.Fatalf("node %s report seqs %v, want 1..%d", id, seqs, len(seqs))
			}
		}
		n := 0
		for _, h := range beats.all() {
			if h.Node == id && h.Incarnation == incarnation[id] && !h.OccurredAt.IsZero() {
				n++
			}
		}
		if n < 2 {
			t.Errorf("node %s: %d heartbeats", id, n)
		}
	}
}

func add(a, b contracts.Counters) contracts.Counters {
	return contracts.Counters{Gets: a.Gets + b.Gets, Hits: a.Hits + b.Hits, Misses: a.Misses + b.Misses, Puts: a.Puts + b.Puts, Evictions: a.Evictions + b.Evictions}
}
