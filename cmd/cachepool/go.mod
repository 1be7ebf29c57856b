module github.com/cachepool/cachepool/cmd/cachepool

go 1.26

require (
	github.com/cachepool/cachepool/bus v0.0.0-00010101000000-000000000000
	github.com/cachepool/cachepool/contracts v0.0.0-00010101000000-000000000000
)

replace (
	github.com/cachepool/cachepool/bus => ../../bus
	github.com/cachepool/cachepool/contracts => ../../contracts
)
