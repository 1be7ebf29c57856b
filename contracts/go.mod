module github.com/cachepool/cachepool/contracts

go 1.26
