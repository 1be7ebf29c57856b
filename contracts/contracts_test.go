package contracts

import (
	"bytes"
	"crypto/md5"
	"errors"
	"strings"
	"testing"
)

func TestSubjects(t *testing.T) {
	tests := map[string]string{
		NodeGet("node-1"):      "cachepool.v1.node.req.get.node-1",
		NodePut("n_2"):         "cachepool.v1.node.req.put.n_2",
		NodeHandoff("a"):       "cachepool.v1.node.req.handoff.a",
		NodeHeartbeat("a"):     "cachepool.v1.node.evt.heartbeat.a",
		NodeHeartbeatFilter():  "cachepool.v1.node.evt.heartbeat.*",
		NodeReportSubject("a"): "cachepool.v1.stats.evt.report.a",
		StorePut:               "cachepool.v1.store.req.put",
		PoolResizeCommand:      "cachepool.v1.pool.cmd.resize",
		PoolStatusSubject:      "cachepool.v1.pool.req.status",
		EvtRequest:             "cachepool.v1.pool.evt.request",
		StatsSeriesSubject:     "cachepool.v1.stats.req.series",
		EvtDecision:            "cachepool.v1.scaler.evt.decision",
		EventsFilter:           "cachepool.v1.*.evt.>",
	}
	for got, want := range tests {
		if got != want {
			t.Errorf("subject %q, want %q", got, want)
		}
	}
}

func TestNodeIDValid(t *testing.T) {
	for _, ok := range []NodeID{"node-1", "A_b-9", NodeID(strings.Repeat("x", 64))} {
		if err := ok.Valid(); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []NodeID{"", "a.b", "a*", "a>", "a b", NodeID(strings.Repeat("x", 65)), "é"} {
		if err := bad.Valid(); !errors.Is(err, ErrBadNodeID) {
			t.Errorf("%q: got %v, want ErrBadNodeID", bad, err)
		}
	}
}

func TestValidateKey(t *testing.T) {
	good := []string{"cat", "cat-1_2.png", "猫の写真", "émoji-😀", "a:b@c+d=e,f~g", strings.Repeat("k", MaxKeyBytes)}
	for _, k := range good {
		if err := ValidateKey(k); err != nil {
			t.Errorf("%q rejected: %v", k, err)
		}
	}
	bad := map[string]error{
		"":                                 ErrKeyEmpty,
		strings.Repeat("k", MaxKeyBytes+1): ErrKeyTooLong,
		strings.Repeat("k", 10000):         ErrKeyTooLong,
		"a b":                              ErrKeyInvalid,
		"a/b":                              ErrKeyInvalid,
		`a\b`:                              ErrKeyInvalid,
		"..":                               ErrKeyInvalid,
		"../../etc/passwd":                 ErrKeyInvalid,
		".":                                ErrKeyInvalid,
		"a\x00b":                           ErrKeyInvalid,
		"a\nb":                             ErrKeyInvalid,
		"a\tb":                             ErrKeyInvalid,
		"a\u200bb":                         ErrKeyInvalid,
		"\xff\xfe":                         ErrKeyUTF8,
	}
	for k, want := range bad {
		if err := ValidateKey(k); !errors.Is(err, want) {
			t.Errorf("%q: got %v, want %v", k, err, want)
		}
	}
}

func TestPartitionMatchesMD5TopBits(t *testing.T) {
	// P = 16 is the original's 16 regions: the first hex digit of the MD5.
	for _, k := range []string{"a", "cat", "猫", "key-12345"} {
		sum := md5.Sum([]byte(k))
		if got, want := Partition(k, 16), int(sum[0]>>4); got != want {
			t.Errorf("Partition(%q,16) = %d, want %d", k, got, want)
		}
		if got, want := Partition(k, 256), int(sum[0]); got != want {
			t.Errorf("Partition(%q,256) = %d, want %d", k, got, want)
		}
		if got := Partition(k, 1); got != 0 {
			t.Errorf("Partition(%q,1) = %d", k, got)
		}
	}
}

func TestPartitionSpread(t *testing.T) {
	const p, n = 256, 256 * 200
	counts := make([]int, p)
	for i := 0; i < n; i++ {
		counts[Partition("key-"+strings.Repeat("x", i%7)+string(rune('a'+i%26))+itoa(i), p)]++
	}
	for i, c := range counts {
		if c < 120 || c > 280 { // mean 200
			t.Fatalf("partition %d has %d keys, expected near 200", i, c)
		}
	}
}

func itoa(i int) string {
	var b [20]byte
	n := len(b)
	for {
		n--
		b[n] = byte('0' + i%10)
		i /= 10
		if i == 0 {
			return string(b[n:])
		}
	}
}

func TestValidatePartitions(t *testing.T) {
	for _, p := range []int{1, 2, 16, 256, 65536} {
		if err := ValidatePartitions(p); err != nil {
			t.Errorf("%d: %v", p, err)
		}
	}
	for _, p := range []int{0, -1, 3, 100, 1 << 17} {
		if err := ValidatePartitions(p); err == nil {
			t.Errorf("%d accepted", p)
		}
	}
}

func TestTableOwner(t *testing.T) {
	tab := &PartitionTable{Partitions: 2, Owners: []NodeID{"a", "b"}, Previous: []NodeID{"", "c"}}
	for _, k := range []string{"x", "y", "z", "w"} {
		o, prev, err := tab.Owner(k)
		if err != nil {
			t.Fatal(err)
		}
		p := Partition(k, 2)
		if o != tab.Owners[p] || prev != tab.Previous[p] {
			t.Errorf("%q: owner %q prev %q for partition %d", k, o, prev, p)
		}
	}
	var empty *PartitionTable
	if _, _, err := empty.Owner("x"); !errors.Is(err, ErrNoOwner) {
		t.Errorf("nil table: %v", err)
	}
	if err := (&PartitionTable{Partitions: 4, Owners: []NodeID{"a"}}).Validate(); err == nil {
		t.Error("short owners accepted")
	}
}

func TestBatchRoundTrip(t *testing.T) {
	in := []Entry{
		{Key: "a", Version: 1, ContentType: "image/png", Value: []byte{1, 2, 3}},
		{Key: "猫", Version: 1 << 40, ContentType: "", Value: nil},
		{Key: "big", Version: 2, ContentType: "image/jpeg", Value: bytes.Repeat([]byte{7}, 70000)},
	}
	out, err := DecodeBatch(EncodeBatch(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != len(in) {
		t.Fatalf("got %d entries", len(out))
	}
	for i := range in {
		if out[i].Key != in[i].Key || out[i].Version != in[i].Version || out[i].ContentType != in[i].ContentType || !bytes.Equal(out[i].Value, in[i].Value) {
			t.Errorf("entry %d differs", i)
		}
	}
	if out, err := DecodeBatch(EncodeBatch(nil)); err != nil || len(out) != 0 {
		t.Errorf("empty batch: %v %v", out, err)
	}
}

func TestBatchRejectsGarbage(t *testing.T) {
	good := EncodeBatch([]Entry{{Key: "a", Version: 1, Value: []byte("xyz")}})
	cases := map[string][]byte{
		"empty":     nil,
		"magic":     append([]byte("XXXX"), good[4:]...),
		"truncated": good[:len(good)-1],
		"trailing":  append(append([]byte{}, good...), 0),
		"huge count": func() []byte {
			b := append([]byte{}, good[:8]...)
			b[4], b[5], b[6], b[7] = 0xff, 0xff, 0xff, 0xff
			return b
		}(),
	}
	for name, b := range cases {
		if _, err := DecodeBatch(b); !errors.Is(err, ErrBadBatch) {
			t.Errorf("%s: got %v", name, err)
		}
	}
}

func FuzzDecodeBatch(f *testing.F) {
	f.Add(EncodeBatch([]Entry{{Key: "a", Version: 1, Value: []byte("v")}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		entries, err := DecodeBatch(b)
		if err != nil {
			return
		}
		if again, err := DecodeBatch(EncodeBatch(entries)); err != nil || len(again) != len(entries) {
			t.Fatalf("re-encode failed: %v", err)
		}
	})
}

func TestValidateMessages(t *testing.T) {
	bad := []interface{ Validate() error }{
		CacheConfig{CapacityMB: 0, Policy: "lru"},
		CacheConfig{CapacityMB: -1, Policy: "lru"},
		CacheConfig{CapacityMB: MaxCapacityMB + 1, Policy: "lru"},
		CacheConfig{CapacityMB: 10, Policy: "lfu"},
		AutoParams{MaxMissRate: 0.4, MinMissRate: 0.6, ExpandRatio: 2, ShrinkRatio: 0.5},
		AutoParams{MaxMissRate: 0.6, MinMissRate: 0.6, ExpandRatio: 2, ShrinkRatio: 0.5},
		AutoParams{MaxMissRate: 1.1, MinMissRate: 0.4, ExpandRatio: 2, ShrinkRatio: 0.5},
		AutoParams{MaxMissRate: 0.6, MinMissRate: -0.1, ExpandRatio: 2, ShrinkRatio: 0.5},
		AutoParams{MaxMissRate: 0.6, MinMissRate: 0.4, ExpandRatio: 1, ShrinkRatio: 0.5},
		AutoParams{MaxMissRate: 0.6, MinMissRate: 0.4, ExpandRatio: 2, ShrinkRatio: 1},
		AutoParams{MaxMissRate: 0.6, MinMissRate: 0.4, ExpandRatio: 2, ShrinkRatio: 0},
		ResizeCommand{Change: 1},
		ResizeCommand{RequestID: "r", Change: 2},
		ResizeCommand{RequestID: "r", Change: 1, Target: 3},
		ResizeCommand{RequestID: "r"},
		ResizeRequest{},
		ResizeRequest{Change: "grow"},
		ResizeRequest{Change: "increase", Target: 2},
		SetModeRequest{Mode: "auto"},
		RateRequest{Rate: "misses"},
		RequestLookup{},
		HandoffRequest{Target: "a.b", PartitionCount: 256},
		HandoffRequest{Target: "b", PartitionCount: 256, Partitions: []int{256}},
		NodeReport{Node: "a", Incarnation: "i", Seq: 0, OccurredAt: at},
	}
	for i, v := range bad {
		if err := v.Validate(); err == nil {
			t.Errorf("case %d (%#v) accepted", i, v)
		}
	}
	err := AutoParams{MaxMissRate: 2, MinMissRate: 3, ExpandRatio: 0.5, ShrinkRatio: 5}.Validate()
	for _, field := range []string{"max_miss_rate_threshold", "min_miss_rate_threshold", "expand_ratio", "shrink_ratio"} {
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("error %v does not name %s", err, field)
		}
	}
	if NormalizePolicy("rr") != PolicyRandom || NormalizePolicy("LRU") != PolicyLRU || NormalizePolicy("fifo") != "" {
		t.Error("policy aliases")
	}
}
