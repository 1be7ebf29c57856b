// Package meta keeps the key → object mapping of the key-image store in a
// SQL database through bun: SQLite (a file in the data dir, WAL mode, busy
// timeout, immediate write transactions) by default, PostgreSQL (pgx's
// database/sql driver with bun's pgdialect) in production. Both run the same
// migrations and pass the same contract tests.
//
// A row's version starts at 1 and grows by one on every upsert of its key;
// upserts of one key are serialized by the database, so versions are unique
// and each upsert learns exactly which object it replaced. A Store is safe
// for concurrent use, also by several processes sharing one database.
package meta
