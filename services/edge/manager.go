package edge

import (
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/contracts"
	"github.com/gin-gonic/gin"
)

// maxJSONBody bounds a manager API request body.
const maxJSONBody = 1 << 20

// decodeBody decodes the request's JSON body strictly into v (well-formed,
// right types, no unknown fields, no trailing data) and answers 400 naming
// the problem when it cannot.
func decodeBody(c *gin.Context, v any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, maxJSONBody))
	if err != nil {
		fail(c, err)
		return false
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		badRequest(c, "body: a JSON object is required")
		return false
	}
	if err := bus.DecodeStrict(body, v); err != nil {
		badRequest(c, "%v", err)
		return false
	}
	return true
}

// missing answers 400 naming every required field that is absent.
func missing(c *gin.Context, fields map[string]bool, order ...string) bool {
	var names []string
	for _, f := range order {
		if !fields[f] {
			names = append(names, f)
		}
	}
	if len(names) == 0 {
		return false
	}
	verb := "is"
	if len(names) > 1 {
		verb = "are"
	}
	badRequest(c, "%s %s required", strings.Join(names, ", "), verb)
	return true
}

// waitParam parses ?wait=<Go duration> (0 when absent, def when absent and def > 0).
func waitParam(c *gin.Context, def time.Duration) (time.Duration, bool) {
	v, found := c.GetQuery("wait")
	if !found {
		return def, true
	}
	d, err := time.ParseDuration(v)
	switch {
	case err != nil:
		badRequest(c, "wait must be a duration such as 30s or 2m, got %q", v)
		return 0, false
	case d < 0:
		badRequest(c, "wait must not be negative, got %v", d)
		return 0, false
	case d > MaxResizeWait:
		badRequest(c, "wait must be at most %v, got %v", MaxResizeWait, d)
		return 0, false
	}
	return d, true
}

// poolNodeList answers GET /api/manager/pool_node_list.
func (s *server) poolNodeList(c *gin.Context) {
	st, err := call[contracts.PoolStatus](c.Request.Context(), s, opPool, contracts.PoolStatusSubject, nil, 0)
	if err != nil {
		fail(c, err)
		return
	}
	ids := make([]contracts.NodeID, 0, len(st.Nodes))
	for _, n := range st.Nodes {
		ids = append(ids, n.ID)
	}
	nodes := st.Nodes
	if nodes == nil {
		nodes = []contracts.NodeInfo{}
	}
	content(c, gin.H{"pool_node_list": ids, "nodes": nodes})
}

// poolsize answers GET /api/manager/poolsize: the pool status without the node list.
func (s *server) poolsize(c *gin.Context) {
	st, err := call[contracts.PoolStatus](c.Request.Context(), s, opPool, contracts.PoolStatusSubject, nil, 0)
	if err != nil {
		fail(c, err)
		return
	}
	content(c, gin.H{
		"size": st.Size, "target": st.Target, "max_nodes": st.MaxNodes, "pending": st.Pending,
		"epoch": st.Epoch, "partitions": st.Partitions, "migration": st.Migration,
		"resize_pool_option": st.Mode.Mode,
	})
}

// modeContent is the pinned shape of a ModeConfig: resize_pool_parameters
// is {} in manual mode; stored_parameters always carries the automatic
// parameters the manager keeps for the next switch to automatic.
func modeContent(m contracts.ModeConfig) gin.H {
	var params any = gin.H{}
	if m.Mode == contracts.ModeAutomatic {
		params = m.Params
	}
	return gin.H{"resize_pool_option": m.Mode, "resize_pool_parameters": params, "stored_parameters": m.Params}
}

// poolsizeConfig answers GET /api/manager/poolsize/config.
func (s *server) poolsizeConfig(c *gin.Context) {
	m, err := call[contracts.ModeConfig](c.Request.Context(), s, opPool, contracts.PoolMode, nil, 0)
	if err != nil {
		fail(c, err)
		return
	}
	content(c, modeContent(m))
}

// changeBody is the body of the manual resize endpoints.
type changeBody struct {
	Change *string `json:"change"`
}

// decodeChange reads {"change":"increase"|"decrease"} into a ResizeRequest.
func decodeChange(c *gin.Context) (contracts.ResizeRequest, bool) {
	var b changeBody
	if !decodeBody(c, &b) {
		return contracts.ResizeRequest{}, false
	}
	if missing(c, map[string]bool{"change": b.Change != nil}, "change") {
		return contracts.ResizeRequest{}, false
	}
	req := contracts.ResizeRequest{Change: *b.Change, Source: contracts.SourceManual}
	if err := req.Validate(); err != nil {
		badRequest(c, "%v", err)
		return req, false
	}
	return req, true
}

// poolsizeManual answers POST /api/manager/poolsize/manual[?wait=…].
func (s *server) poolsizeManual(c *gin.Context) {
	req, valid := decodeChange(c)
	if !valid {
		return
	}
	wait, valid := waitParam(c, 0)
	if !valid {
		return
	}
	s.resize(c, req, wait)
}

// poolsizeChange answers POST /api/poolsize/change: the manual resize,
// waited for (DefaultResizeWait unless ?wait= says otherwise).
func (s *server) poolsizeChange(c *gin.Context) {
	req, valid := decodeChange(c)
	if !valid {
		return
	}
	wait, valid := waitParam(c, DefaultResizeWait)
	if !valid {
		return
	}
	s.resize(c, req, wait)
}

// resize queues req and answers with its state: 200 applied, 409 rejected
// (with the reason), 500 failed, 202 while it is still queued or running.
func (s *server) resize(c *gin.Context, req contracts.ResizeRequest, wait time.Duration) {
	st, err := s.enqueueResize(c, req, wait)
	if err != nil {
		fail(c, err)
		return
	}
	answerResize(c, st)
}

func (s *server) enqueueResize(c *gin.Context, req contracts.ResizeRequest, wait time.Duration) (contracts.ResizeRequestState, error) {
	req.WaitMS = wait.Milliseconds()
	return call[contracts.ResizeRequestState](c.Request.Context(), s, opPool, contracts.PoolResize, req, s.cfg.RequestTimeout+wait)
}

func answerResize(c *gin.Context, st contracts.ResizeRequestState) {
	switch st.Status {
	case contracts.StateApplied:
		content(c, st)
	case contracts.StateRejected:
		failWith(c, contracts.Errorf(contracts.CodeConflict, "resize request %s rejected: %s", st.RequestID, st.Reason), st)
	case contracts.StateFailed:
		failWith(c, contracts.Errorf(contracts.CodeInternal, "resize request %s failed: %s", st.RequestID, st.Reason), st)
	default:
		contentStatus(c, http.StatusAccepted, st)
	}
}

// autoBody is the body of POST /api/manager/poolsize/automatic; every field is required.
type autoBody struct {
	MaxMissRate *float64 `json:"max_miss_rate_threshold"`
	MinMissRate *float64 `json:"min_miss_rate_threshold"`
	ExpandRatio *float64 `json:"expand_ratio"`
	ShrinkRatio *float64 `json:"shrink_ratio"`
}

// poolsizeAutomatic answers POST /api/manager/poolsize/automatic: stores
// the parameters and switches to automatic mode.
func (s *server) poolsizeAutomatic(c *gin.Context) {
	var b autoBody
	if !decodeBody(c, &b) {
		return
	}
	if missing(c, map[string]bool{
		"max_miss_rate_threshold": b.MaxMissRate != nil, "min_miss_rate_threshold": b.MinMissRate != nil,
		"expand_ratio": b.ExpandRatio != nil, "shrink_ratio": b.ShrinkRatio != nil,
	}, "max_miss_rate_threshold", "min_miss_rate_threshold", "expand_ratio", "shrink_ratio") {
		return
	}
	p := contracts.AutoParams{MaxMissRate: *b.MaxMissRate, MinMissRate: *b.MinMissRate, ExpandRatio: *b.ExpandRatio, ShrinkRatio: *b.ShrinkRatio}
	if err := p.Validate(); err != nil {
		badRequest(c, "%v", err)
		return
	}
	m, err := call[contracts.ModeConfig](c.Request.Context(), s, opPool, contracts.PoolSetAuto, p, 0)
	if err != nil {
		fail(c, err)
		return
	}
	content(c, modeContent(m))
}

// cacheConfigBody is the body of the cache config endpoints. policy is an
// alias of replacement_policy; rr an alias of random.
type cacheConfigBody struct {
	Capacity          *float64 `json:"capacity"`
	ReplacementPolicy *string  `json:"replacement_policy"`
	Policy            *string  `json:"policy"`
}

// setCacheConfig answers POST /api/manager/config and /api/manager/cache/config.
func (s *server) setCacheConfig(c *gin.Context) {
	var b cacheConfigBody
	if !decodeBody(c, &b) {
		return
	}
	policy := b.ReplacementPolicy
	if b.Policy != nil {
		if policy != nil && contracts.NormalizePolicy(*policy) != contracts.NormalizePolicy(*b.Policy) {
			badRequest(c, "replacement_policy and its alias policy disagree (%q, %q)", *policy, *b.Policy)
			return
		}
		policy = b.Policy
	}
	if missing(c, map[string]bool{"capacity": b.Capacity != nil, "replacement_policy": policy != nil}, "capacity", "replacement_policy") {
		return
	}
	cfg := contracts.CacheConfig{CapacityMB: *b.Capacity, Policy: *policy}
	if err := cfg.Validate(); err != nil {
		badRequest(c, "%v", err)
		return
	}
	cfg.Policy = contracts.NormalizePolicy(cfg.Policy)
	applied, err := call[contracts.CacheConfig](c.Request.Context(), s, opPool, contracts.PoolSetCacheConfig, cfg, 0)
	if err != nil {
		fail(c, err)
		return
	}
	content(c, applied)
}

// cacheConfig answers GET /api/manager/cache/config.
func (s *server) cacheConfig(c *gin.Context) {
	cfg, err := call[contracts.CacheConfig](c.Request.Context(), s, opPool, contracts.PoolGetCacheConfig, nil, 0)
	if err != nil {
		fail(c, err)
		return
	}
	content(c, cfg)
}

// clearCache answers DELETE /api/manager/cache/clear.
func (s *server) clearCache(c *gin.Context) {
	r, err := call[contracts.ClearReply](c.Request.Context(), s, opPool, contracts.PoolClearCache, nil, clearTimeout)
	if err != nil {
		fail(c, err)
		return
	}
	content(c, r)
}

// clearData answers DELETE /api/manager/data/clear.
func (s *server) clearData(c *gin.Context) {
	r, err := call[contracts.ClearAllReply](c.Request.Context(), s, opPool, contracts.PoolClearData, nil, clearTimeout)
	if err != nil {
		fail(c, err)
		return
	}
	content(c, r)
}

// resizeRequest answers GET /api/manager/poolsize/requests/<id>[?wait=…]
// with the request's status and history (404 for an unknown id).
func (s *server) resizeRequest(c *gin.Context) {
	wait, valid := waitParam(c, 0)
	if !valid {
		return
	}
	req := contracts.RequestLookup{RequestID: c.Param("id"), WaitMS: wait.Milliseconds()}
	st, err := call[contracts.ResizeRequestState](c.Request.Context(), s, opPool, contracts.PoolRequest, req, s.cfg.RequestTimeout+wait)
	if err != nil {
		fail(c, err)
		return
	}
	content(c, st)
}

// resizeRequests answers GET /api/manager/poolsize/requests: recent requests, newest first.
func (s *server) resizeRequests(c *gin.Context) {
	l, err := call[contracts.ResizeRequestList](c.Request.Context(), s, opPool, contracts.PoolRequests, nil, 0)
	if err != nil {
		fail(c, err)
		return
	}
	if l.Requests == nil {
		l.Requests = []contracts.ResizeRequestState{}
	}
	content(c, l)
}

// setMode answers POST /api/manager/mode {"mode":"manual"|"automatic"};
// the stored automatic parameters are kept.
func (s *server) setMode(c *gin.Context) {
	var b struct {
		Mode *string `json:"mode"`
	}
	if !decodeBody(c, &b) {
		return
	}
	if missing(c, map[string]bool{"mode": b.Mode != nil}, "mode") {
		return
	}
	req := contracts.SetModeRequest{Mode: *b.Mode}
	if err := req.Validate(); err != nil {
		badRequest(c, "%v", err)
		return
	}
	m, err := call[contracts.ModeConfig](c.Request.Context(), s, opPool, contracts.PoolSetMode, req, 0)
	if err != nil {
		fail(c, err)
		return
	}
	content(c, modeContent(m))
}

// aggregateStats answers GET /api/manager/aggregate_stats. When the stats
// service does not answer (503), it answers an empty series with success:
// the dashboard then shows "no data yet" rather than an error.
func (s *server) aggregateStats(c *gin.Context) {
	series, err := call[contracts.StatsSeries](c.Request.Context(), s, opStats, contracts.StatsSeriesSubject, nil, 0)
	if err != nil && bus.CodeOf(err) != contracts.CodeUnavailable {
		fail(c, err)
		return
	}
	content(c, normalizeSeries(series))
}

// normalizeSeries makes every array of s non-nil, so it encodes as [].
func normalizeSeries(s contracts.StatsSeries) contracts.StatsSeries {
	if s.MissRate == nil {
		s.MissRate = []*float64{}
	}
	if s.HitRate == nil {
		s.HitRate = []*float64{}
	}
	if s.Items == nil {
		s.Items = []int64{}
	}
	if s.Bytes == nil {
		s.Bytes = []int64{}
	}
	if s.RequestsPerMinute == nil {
		s.RequestsPerMinute = []float64{}
	}
	if s.Nodes == nil {
		s.Nodes = []int{}
	}
	if s.Timestamps == nil {
		s.Timestamps = []time.Time{}
	}
	if s.Points == nil {
		s.Points = []contracts.StatsPoint{}
	}
	return s
}

// scalerDecisions answers GET /api/manager/scaler/decisions; like
// aggregate_stats, an absent scaler (503) gives an empty list with success.
func (s *server) scalerDecisions(c *gin.Context) {
	l, err := call[contracts.DecisionList](c.Request.Context(), s, opScaler, contracts.ScalerDecisions, nil, 0)
	if err != nil && bus.CodeOf(err) != contracts.CodeUnavailable {
		fail(c, err)
		return
	}
	if l.Decisions == nil {
		l.Decisions = []contracts.ScalerDecision{}
	}
	content(c, l)
}
