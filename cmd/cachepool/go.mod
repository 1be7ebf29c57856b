module github.com/cachepool/cachepool/cmd/cachepool

go 1.26.0

require (
	github.com/cachepool/cachepool/bus v0.0.0-00010101000000-000000000000
	github.com/cachepool/cachepool/contracts v0.0.0-00010101000000-000000000000
	github.com/cachepool/cachepool/system v0.0.0-00010101000000-000000000000
)

replace (
	github.com/cachepool/cachepool/bus => ../../bus
	github.com/cachepool/cachepool/contracts => ../../contracts
	github.com/cachepool/cachepool/services/cachenode => ../../services/cachenode
	github.com/cachepool/cachepool/services/edge => ../../services/edge
	github.com/cachepool/cachepool/services/imagestore => ../../services/imagestore
	github.com/cachepool/cachepool/services/manager => ../../services/manager
	github.com/cachepool/cachepool/services/scaler => ../../services/scaler
	github.com/cachepool/cachepool/services/stats => ../../services/stats
	github.com/cachepool/cachepool/system => ../../system
)
