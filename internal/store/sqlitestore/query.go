package sqlitestore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"strings"

	"modernc.org/sqlite"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
)

// lowerFunc is an SQL function, strings.ToLower: SQLite's lower() folds
// ASCII only, and an image name may be in any script, so the search
// folds case as the Go code it replaced did (strings.ToLower).
const lowerFunc = "bty_lower"

func init() {
	err := sqlite.RegisterDeterministicScalarFunction(lowerFunc, 1, func(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
		switch v := args[0].(type) {
		case string:
			return strings.ToLower(v), nil
		case []byte:
			return strings.ToLower(string(v)), nil
		default:
			return v, nil
		}
	})
	if err != nil {
		panic(err)
	}
}

// nextBootWhy is fleet.Decide(m).Why as an SQL expression of a machines
// row, so the next_boot order is the database's work.
// TestNextBootWhyIsDecide holds it to fleet.Decide for every case.
const nextBootWhy = `(CASE boot_policy
	WHEN 'flash' THEN CASE
		WHEN image = '' THEN 'local disk (flash policy, but no image assigned)'
		WHEN next_boot = 'local' THEN 'local disk once (flashed), then flash ' || image
		ELSE 'flash ' || image END
	WHEN 'tui' THEN 'interactive live env (tui)'
	ELSE 'local disk' END)`

// sortExprs are the ORDER BY expressions of the store.MachineSorts
// (times are fixed-width UTC text, so they sort as times; NULL, never,
// sorts first ascending as SQLite puts NULLs first).
var sortExprs = map[string]string{
	store.SortMAC:         "",
	store.SortHostname:    "hostname",
	store.SortImage:       "image",
	store.SortPolicy:      "boot_policy",
	store.SortNextBoot:    nextBootWhy,
	store.SortLastSeen:    "last_seen_at",
	store.SortLastFlashed: "last_flashed_at",
}

// machineFilter is the WHERE clause (without the keyword; "1" for
// none) and its arguments for q's filter.
func machineFilter(q store.MachineQuery) (string, []any) {
	var (
		conds []string
		args  []any
	)
	if search := strings.ToLower(strings.TrimSpace(q.Search)); search != "" {
		c := `(instr(mac, ?) > 0 OR instr(` + lowerFunc + `(hostname), ?) > 0 OR instr(` + lowerFunc + `(image), ?) > 0 OR instr(last_seen_ip, ?) > 0`
		args = append(args, search, search, search, search)
		if flat := strings.NewReplacer(":", "", "-", "", ".", "").Replace(search); flat != "" {
			c += ` OR instr(replace(mac, ':', ''), ?) > 0`
			args = append(args, flat)
		}
		conds = append(conds, c+")")
	}
	if q.Policy != "" {
		conds = append(conds, "boot_policy = ?")
		args = append(args, string(q.Policy))
	}
	if q.Unassigned {
		conds = append(conds, "(discovered_at IS NOT NULL AND image = '')")
	}
	for _, r := range q.Selector {
		c, a := labelCond(r)
		conds = append(conds, c)
		args = append(args, a...)
	}
	if len(conds) == 0 {
		return "1", nil
	}
	return strings.Join(conds, " AND "), args
}

// QueryMachines reads one page of matching machines and the counts in
// one read transaction (one snapshot of the WAL).
func (s *SQLite) QueryMachines(ctx context.Context, q store.MachineQuery) (store.MachinePage, error) {
	if err := q.Check(); err != nil {
		return store.MachinePage{}, err
	}
	const op = "listing machines"
	where, args := machineFilter(q)
	dir := "ASC"
	if q.Desc {
		dir = "DESC"
	}
	order := "mac " + dir
	if e := sortExprs[q.Sort]; e != "" {
		order = e + " " + dir + ", " + order
	}
	pageWhere, pageArgs := where, args
	if !q.After.IsZero() {
		cmp := ">"
		if q.Desc {
			cmp = "<"
		}
		pageWhere = "(" + where + ") AND mac " + cmp + " ?"
		pageArgs = append(append([]any(nil), args...), q.After.String())
	}
	limit := int64(q.Limit)
	if limit == 0 {
		limit = -1 // SQLite: no limit
	}
	pageArgs = append(pageArgs, limit, q.Offset)

	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return store.MachinePage{}, s.dbError(op, err)
	}
	defer tx.Rollback()
	page := store.MachinePage{Machines: []fleet.Machine{}}
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM machines`).Scan(&page.Total); err != nil {
		return store.MachinePage{}, s.dbError(op, err)
	}
	page.Matched = page.Total
	if where != "1" {
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM machines WHERE `+where, args...).Scan(&page.Matched); err != nil {
			return store.MachinePage{}, s.dbError(op, err)
		}
	}
	rows, err := tx.QueryContext(ctx, `SELECT `+machineCols+` FROM machines WHERE `+pageWhere+
		` ORDER BY `+order+` LIMIT ? OFFSET ?`, pageArgs...)
	if err != nil {
		return store.MachinePage{}, s.dbError(op, err)
	}
	defer rows.Close()
	for rows.Next() {
		m, err := scanMachine(rows)
		if err != nil {
			return store.MachinePage{}, s.dbError(op, err)
		}
		page.Machines = append(page.Machines, m)
	}
	if err := rows.Err(); err != nil {
		return store.MachinePage{}, s.dbError(op, err)
	}
	return page, nil
}

// labelCond is the SQL condition of one selector requirement, an
// indexed lookup of machine_labels (Kubernetes' meaning: != and notin
// match machines without the key too).
func labelCond(r fleet.LabelRequirement) (string, []any) {
	has := func(vals []string) (string, []any) {
		c := `EXISTS (SELECT 1 FROM machine_labels l WHERE l.mac = machines.mac AND l.key = ?`
		args := []any{r.Key}
		if vals != nil {
			c += ` AND l.value IN (` + strings.TrimSuffix(strings.Repeat("?, ", len(vals)), ", ") + `)`
			for _, v := range vals {
				args = append(args, v)
			}
		}
		return c + `)`, args
	}
	switch r.Op {
	case fleet.LabelEquals, fleet.LabelIn:
		return has(append([]string{}, r.Values...))
	case fleet.LabelNotEquals, fleet.LabelNotIn:
		c, a := has(append([]string{}, r.Values...))
		return "NOT " + c, a
	case fleet.LabelExists:
		return has(nil)
	case fleet.LabelNotExists:
		c, a := has(nil)
		return "NOT " + c, a
	}
	return "0", nil
}
