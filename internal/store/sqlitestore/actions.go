package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/btyproject/bty/internal/fleet"
)

// The automation's history (docs/reference.md, "Failure recovery").

func scanActions(rows *sql.Rows) ([]fleet.Action, error) {
	defer rows.Close()
	out := []fleet.Action{}
	for rows.Next() {
		var doc string
		if err := rows.Scan(&doc); err != nil {
			return nil, err
		}
		var a fleet.Action
		if err := json.Unmarshal([]byte(doc), &a); err != nil {
			return nil, fmt.Errorf("not an action's JSON: %w", err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// SaveAction inserts a with a new ID.
func (s *SQLite) SaveAction(ctx context.Context, a fleet.Action) (fleet.Action, error) {
	op := fmt.Sprintf("saving the %s action of %s", a.Action, a.MAC)
	err := s.write(ctx, func(ctx context.Context, tx dbtx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO actions (mac, at, action, doc) VALUES (?, ?, ?, '')`,
			a.MAC.String(), formatTime(a.At), string(a.Action))
		if err != nil {
			return s.dbError(op, err)
		}
		if a.ID, err = res.LastInsertId(); err != nil {
			return s.dbError(op, err)
		}
		b, _ := json.Marshal(a) // strings, ints and a time always encode
		_, err = tx.ExecContext(ctx, `UPDATE actions SET doc = ? WHERE id = ?`, string(b), a.ID)
		return s.dbErrorOrNil(op, err)
	})
	return a, err
}

// ListActions returns one page of a machine's actions (every machine's
// for a zero MAC), newest first, with their number.
func (s *SQLite) ListActions(ctx context.Context, mac fleet.MAC, limit, offset int) ([]fleet.Action, int, error) {
	return listDocs(ctx, s, "actions", mac, limit, offset, scanActions)
}

// CountActions counts a machine's actions of kind a at or after since.
func (s *SQLite) CountActions(ctx context.Context, mac fleet.MAC, a fleet.RecoveryAction, since time.Time) (int, error) {
	var n int
	err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM actions WHERE mac = ? AND action = ? AND at >= ?`,
		mac.String(), string(a), formatTime(since)).Scan(&n)
	return n, s.dbErrorOrNil("counting actions of "+mac.String(), err)
}
