package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
)

// storedFlash is a flash as the database keeps it: fleet.Flash with the
// sha256 of its cycle token, which fleet.Flash's own JSON leaves out.
type storedFlash struct {
	fleet.Flash
	TokenHash string `json:"token_hash,omitempty"`
}

func encodeFlash(f *fleet.Flash) string {
	if f == nil {
		return ""
	}
	b, err := json.Marshal(storedFlash{Flash: *f, TokenHash: f.TokenHash})
	if err != nil { // a NaN rate; fleet.Progress.Sane keeps them out
		f2 := *f
		f2.Rate = 0
		b, _ = json.Marshal(storedFlash{Flash: f2, TokenHash: f.TokenHash})
	}
	return string(b)
}

func decodeFlash(s string) (fleet.Flash, error) {
	var sf storedFlash
	if err := json.Unmarshal([]byte(s), &sf); err != nil {
		return fleet.Flash{}, fmt.Errorf("not a flash's JSON: %w", err)
	}
	sf.Flash.TokenHash = sf.TokenHash
	return sf.Flash, nil
}

// writeFlash writes a machine's latest flash to the history when it
// changed from before: a new one (ID 0) is inserted and returned with
// its ID.
func writeFlash(ctx context.Context, tx dbtx, before, after *fleet.Flash) (*fleet.Flash, error) {
	if after == nil || reflect.DeepEqual(before, after) {
		return after, nil
	}
	f := *after
	if f.ID == 0 {
		res, err := tx.ExecContext(ctx, `INSERT INTO flashes (mac, requested_at, result, doc) VALUES (?, ?, ?, '')`,
			f.MAC.String(), formatTime(f.RequestedAt), string(f.Result))
		if err != nil {
			return nil, err
		}
		if f.ID, err = res.LastInsertId(); err != nil {
			return nil, err
		}
	}
	_, err := tx.ExecContext(ctx, `UPDATE flashes SET requested_at = ?, result = ?, doc = ? WHERE id = ?`,
		formatTime(f.RequestedAt), string(f.Result), encodeFlash(&f), f.ID)
	return &f, err
}

func scanFlashes(rows *sql.Rows) ([]fleet.Flash, error) {
	defer rows.Close()
	out := []fleet.Flash{}
	for rows.Next() {
		var doc string
		if err := rows.Scan(&doc); err != nil {
			return nil, err
		}
		f, err := decodeFlash(doc)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, rows.Err()
}

// ListFlashes returns a page of flashes, newest first.
func (s *SQLite) ListFlashes(ctx context.Context, mac fleet.MAC, limit, offset int) ([]fleet.Flash, int, error) {
	return listDocs(ctx, s, "flashes", mac, limit, offset, scanFlashes)
}

// listDocs is one page of the rows of a history table (flashes, runs:
// id, mac, doc), newest first, the machine's or every machine's for a
// zero MAC (limit 0: all), with their number, read in one snapshot.
func listDocs[T any](ctx context.Context, s *SQLite, table string, mac fleet.MAC, limit, offset int, scan func(*sql.Rows) ([]T, error)) ([]T, int, error) {
	op := "listing " + table
	if limit <= 0 {
		limit = -1
	}
	where, args := "1", []any{}
	if !mac.IsZero() {
		where, args = "mac = ?", []any{mac.String()}
	}
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, 0, s.dbError(op, err)
	}
	defer tx.Rollback()
	var total int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM `+table+` WHERE `+where, args...).Scan(&total); err != nil {
		return nil, 0, s.dbError(op, err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT doc FROM `+table+` WHERE `+where+` ORDER BY id DESC LIMIT ? OFFSET ?`,
		append(args, limit, max(offset, 0))...)
	if err != nil {
		return nil, 0, s.dbError(op, err)
	}
	docs, err := scan(rows)
	if err != nil {
		return nil, 0, s.dbError(op, err)
	}
	return docs, total, nil
}

// RunningFlashes returns every flash in progress, oldest first.
func (s *SQLite) RunningFlashes(ctx context.Context) ([]fleet.Flash, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT doc FROM flashes WHERE result = ? ORDER BY id`, string(fleet.FlashRunning))
	if err != nil {
		return nil, s.dbError("listing running flashes", err)
	}
	fs, err := scanFlashes(rows)
	return fs, s.dbErrorOrNil("listing running flashes", err)
}

// FlashesSince returns the flashes requested at or after since, oldest
// first, at most limit (0: no bound).
func (s *SQLite) FlashesSince(ctx context.Context, since time.Time, limit int) ([]fleet.Flash, error) {
	if limit <= 0 {
		limit = -1
	}
	rows, err := s.r.QueryContext(ctx, `SELECT doc FROM flashes WHERE requested_at >= ? ORDER BY requested_at, id LIMIT ?`,
		formatTime(since), limit)
	if err != nil {
		return nil, s.dbError("listing recent flashes", err)
	}
	fs, err := scanFlashes(rows)
	return fs, s.dbErrorOrNil("listing recent flashes", err)
}

// GetFlash returns one flash, or store.ErrNotFound.
func (s *SQLite) GetFlash(ctx context.Context, id int64) (fleet.Flash, error) {
	var doc string
	err := s.r.QueryRowContext(ctx, `SELECT doc FROM flashes WHERE id = ?`, id).Scan(&doc)
	if errors.Is(err, sql.ErrNoRows) {
		return fleet.Flash{}, fmt.Errorf("flash %d: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return fleet.Flash{}, s.dbError(fmt.Sprintf("reading flash %d", id), err)
	}
	f, err := decodeFlash(doc)
	return f, s.dbErrorOrNil(fmt.Sprintf("reading flash %d", id), err)
}
