package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
)

// Schedules (docs/reference.md, "Schedules"): one row each, the
// schedule as JSON in doc, its id the row's.

func encodeSchedule(s fleet.Schedule) string {
	b, _ := json.Marshal(s) // strings, ints, bools and times always encode
	return string(b)
}

func decodeSchedule(id int64, doc string) (fleet.Schedule, error) {
	var s fleet.Schedule
	if err := json.Unmarshal([]byte(doc), &s); err != nil {
		return s, fmt.Errorf("schedule %d: not a schedule's JSON: %w", id, err)
	}
	s.ID = id
	return s, nil
}

func scheduleNotFound(id int64) error { return fmt.Errorf("schedule %d: %w", id, store.ErrNotFound) }

// CreateSchedule stores s with a new id, unless max are stored.
func (s *SQLite) CreateSchedule(ctx context.Context, sch fleet.Schedule, max int) (fleet.Schedule, error) {
	const op = "creating a schedule"
	err := s.write(ctx, func(ctx context.Context, tx dbtx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schedules`).Scan(&n); err != nil {
			return s.dbError(op, err)
		}
		if n >= max {
			return fmt.Errorf("%d schedules are stored, the most bty-web keeps: delete one first: %w", n, store.ErrLimit)
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO schedules (doc) VALUES ('')`)
		if err != nil {
			return s.dbError(op, err)
		}
		if sch.ID, err = res.LastInsertId(); err != nil {
			return s.dbError(op, err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE schedules SET doc = ? WHERE id = ?`, encodeSchedule(sch), sch.ID); err != nil {
			return s.dbError(op, err)
		}
		return nil
	})
	if err != nil {
		return fleet.Schedule{}, err
	}
	return sch, nil
}

// GetSchedule returns one schedule, or store.ErrNotFound.
func (s *SQLite) GetSchedule(ctx context.Context, id int64) (fleet.Schedule, error) {
	var doc string
	err := s.r.QueryRowContext(ctx, `SELECT doc FROM schedules WHERE id = ?`, id).Scan(&doc)
	if errors.Is(err, sql.ErrNoRows) {
		return fleet.Schedule{}, scheduleNotFound(id)
	}
	if err != nil {
		return fleet.Schedule{}, s.dbError(fmt.Sprintf("reading schedule %d", id), err)
	}
	sch, err := decodeSchedule(id, doc)
	return sch, s.dbErrorOrNil(fmt.Sprintf("reading schedule %d", id), err)
}

// ListSchedules returns every schedule by id.
func (s *SQLite) ListSchedules(ctx context.Context) ([]fleet.Schedule, error) {
	const op = "listing schedules"
	rows, err := s.r.QueryContext(ctx, `SELECT id, doc FROM schedules ORDER BY id`)
	if err != nil {
		return nil, s.dbError(op, err)
	}
	defer rows.Close()
	out := []fleet.Schedule{}
	for rows.Next() {
		var (
			id  int64
			doc string
		)
		if err := rows.Scan(&id, &doc); err != nil {
			return nil, s.dbError(op, err)
		}
		sch, err := decodeSchedule(id, doc)
		if err != nil {
			return nil, s.dbError(op, err)
		}
		out = append(out, sch)
	}
	return out, s.dbErrorOrNil(op, rows.Err())
}

// ModifySchedule reads, changes and writes one schedule in one
// transaction.
func (s *SQLite) ModifySchedule(ctx context.Context, id int64, fn func(fleet.Schedule) (fleet.Schedule, error)) (fleet.Schedule, error) {
	op := fmt.Sprintf("updating schedule %d", id)
	var out fleet.Schedule
	err := s.write(ctx, func(ctx context.Context, tx dbtx) error {
		var doc string
		err := tx.QueryRowContext(ctx, `SELECT doc FROM schedules WHERE id = ?`, id).Scan(&doc)
		if errors.Is(err, sql.ErrNoRows) {
			return scheduleNotFound(id)
		}
		if err != nil {
			return s.dbError(op, err)
		}
		cur, err := decodeSchedule(id, doc)
		if err != nil {
			return s.dbError(op, err)
		}
		next, err := fn(cur)
		if err != nil {
			return err
		}
		next.ID = id
		if _, err := tx.ExecContext(ctx, `UPDATE schedules SET doc = ? WHERE id = ?`, encodeSchedule(next), id); err != nil {
			return s.dbError(op, err)
		}
		out = next
		return nil
	})
	if err != nil {
		return fleet.Schedule{}, err
	}
	return out, nil
}

// DeleteSchedule deletes one schedule, or returns store.ErrNotFound.
func (s *SQLite) DeleteSchedule(ctx context.Context, id int64) error {
	return s.write(ctx, func(ctx context.Context, tx dbtx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM schedules WHERE id = ?`, id)
		if err != nil {
			return s.dbError(fmt.Sprintf("deleting schedule %d", id), err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return s.dbError(fmt.Sprintf("deleting schedule %d", id), err)
		} else if n == 0 {
			return scheduleNotFound(id)
		}
		return nil
	})
}
