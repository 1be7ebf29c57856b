package edge

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/cachepool/cachepool/contracts"
	"github.com/gin-gonic/gin"
)

// configureRequest is POST /api/configure_cache's parsed parameters; nil
// means "not given, keep the current value".
type configureRequest struct {
	mode                                    *string
	numNodes                                *int
	cacheSize                               *float64
	policy                                  *string
	expRatio, shrinkRatio, maxMiss, minMiss *float64
}

// parseConfigure reads the parameters (query string, else form body) and
// answers 400 naming the first malformed one.
func parseConfigure(c *gin.Context) (configureRequest, bool) {
	var r configureRequest
	if v, found := formValue(c, "mode"); found {
		switch strings.ToLower(v) {
		case "manual":
			m := contracts.ModeManual
			r.mode = &m
		case "auto", "automatic":
			m := contracts.ModeAutomatic
			r.mode = &m
		default:
			badRequest(c, `mode must be "manual" or "auto", got %q`, v)
			return r, false
		}
	}
	if v, found := formValue(c, "numNodes"); found {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			badRequest(c, "numNodes must be an integer of at least 1, got %q", v)
			return r, false
		}
		r.numNodes = &n
	}
	if v, found := formValue(c, "policy"); found {
		p := contracts.NormalizePolicy(v)
		if p == "" {
			badRequest(c, "policy must be %q or %q (alias RR), got %q", contracts.PolicyLRU, contracts.PolicyRandom, v)
			return r, false
		}
		r.policy = &p
	}
	for _, f := range []struct {
		name string
		dst  **float64
	}{{"cacheSize", &r.cacheSize}, {"expRatio", &r.expRatio}, {"shrinkRatio", &r.shrinkRatio}, {"maxMiss", &r.maxMiss}, {"minMiss", &r.minMiss}} {
		v, found := formValue(c, f.name)
		if !found {
			continue
		}
		x, err := strconv.ParseFloat(v, 64)
		if err != nil {
			badRequest(c, "%s must be a number, got %q", f.name, v)
			return r, false
		}
		*f.dst = &x
	}
	return r, true
}

func (r configureRequest) autoGiven() bool {
	return r.expRatio != nil || r.shrinkRatio != nil || r.maxMiss != nil || r.minMiss != nil
}

// configureCache answers POST /api/configure_cache?mode=&numNodes=&cacheSize=&policy=&expRatio=&shrinkRatio=&maxMiss=&minMiss=.
// Every parameter is optional; the given ones are merged into the current
// settings, and the merged settings are validated before anything changes
// (400 naming the field, nothing forwarded). Then, in this order: the cache
// config (capacity, policy), the resize to numNodes (waited for, up to
// DefaultResizeWait), the automatic parameters, and the mode — so that
// mode=auto stays automatic even though a numNodes resize is a manual one.
func (s *server) configureCache(c *gin.Context) {
	r, valid := parseConfigure(c)
	if !valid {
		return
	}
	ctx := c.Request.Context()

	var cache *contracts.CacheConfig
	if r.cacheSize != nil || r.policy != nil {
		cur, err := call[contracts.CacheConfig](ctx, s, opPool, contracts.PoolGetCacheConfig, nil, 0)
		if err != nil {
			fail(c, err)
			return
		}
		if r.cacheSize != nil {
			cur.CapacityMB = *r.cacheSize
		}
		if r.policy != nil {
			cur.Policy = *r.policy
		}
		if err := cur.Validate(); err != nil {
			badRequest(c, "cacheSize/policy: %v", err)
			return
		}
		cache = &cur
	}
	var auto *contracts.AutoParams
	if r.autoGiven() {
		// Storing parameters switches to automatic (PoolSetAuto); without a
		// mode parameter the current mode is kept, so it is set back after.
		cur, err := call[contracts.ModeConfig](ctx, s, opPool, contracts.PoolMode, nil, 0)
		if err != nil {
			fail(c, err)
			return
		}
		p := cur.Params
		for _, f := range []struct {
			src *float64
			dst *float64
		}{{r.expRatio, &p.ExpandRatio}, {r.shrinkRatio, &p.ShrinkRatio}, {r.maxMiss, &p.MaxMissRate}, {r.minMiss, &p.MinMissRate}} {
			if f.src != nil {
				*f.dst = *f.src
			}
		}
		if err := p.Validate(); err != nil {
			badRequest(c, "expRatio/shrinkRatio/maxMiss/minMiss: %v", err)
			return
		}
		auto = &p
		if r.mode == nil {
			keep := cur.Mode
			r.mode = &keep
		}
	}

	out := gin.H{}
	if cache != nil {
		applied, err := call[contracts.CacheConfig](ctx, s, opPool, contracts.PoolSetCacheConfig, *cache, 0)
		if err != nil {
			fail(c, err)
			return
		}
		out["cacheSize"], out["policy"] = applied.CapacityMB, applied.Policy
	}
	if r.numNodes != nil {
		st, err := s.enqueueResize(c, contracts.ResizeRequest{Target: *r.numNodes, Source: contracts.SourceManual}, DefaultResizeWait)
		if err != nil {
			fail(c, err)
			return
		}
		if st.Status != contracts.StateApplied {
			answerResize(c, st)
			return
		}
		out["numNodes"] = st.ToSize
		out["resize"] = st
	}
	var mode *contracts.ModeConfig
	if auto != nil {
		m, err := call[contracts.ModeConfig](ctx, s, opPool, contracts.PoolSetAuto, *auto, 0)
		if err != nil {
			fail(c, err)
			return
		}
		mode = &m
		if *r.mode == m.Mode {
			r.mode = nil
		}
	}
	if r.mode != nil {
		m, err := call[contracts.ModeConfig](ctx, s, opPool, contracts.PoolSetMode, contracts.SetModeRequest{Mode: *r.mode}, 0)
		if err != nil {
			fail(c, err)
			return
		}
		mode = &m
	}
	if mode != nil {
		out["mode"] = mode.Mode
		out["parameters"] = mode.Params
	}
	okStatus(c, http.StatusOK, out)
}
