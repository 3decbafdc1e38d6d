package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
)

// nicMACs are the MACs of m's inventory's NICs other than its own, in
// the inventory's order (nil without an inventory).
func nicMACs(m fleet.Machine) []string {
	if m.Inventory == nil {
		return nil
	}
	var out []string
	for _, n := range m.Inventory.NICs {
		if n.MAC != m.MAC {
			out = append(out, n.MAC.String())
		}
	}
	return out
}

// linkNICs replaces m's NIC links (machine_nics) with its inventory's
// other NICs, by the rule of docs/reference.md, "Inventory": a MAC is
// linked only when no record has it as its own MAC and no other
// machine has it linked; its own MAC is never a link (a record's MAC
// always names that record). The first machine to report a NIC keeps
// it until it reports without it or is deleted.
func linkNICs(ctx context.Context, tx dbtx, m fleet.Machine) error {
	mac := m.MAC.String()
	if _, err := tx.ExecContext(ctx, `DELETE FROM machine_nics WHERE machine = ? OR mac = ?`, mac, mac); err != nil {
		return err
	}
	for _, n := range nicMACs(m) {
		if _, err := tx.ExecContext(ctx, `INSERT INTO machine_nics (mac, machine)
			SELECT ?, ? WHERE NOT EXISTS (SELECT 1 FROM machines WHERE mac = ?)
			ON CONFLICT (mac) DO NOTHING`, n, mac, n); err != nil {
			return err
		}
	}
	return nil
}

// MachineByNIC returns the MAC of the machine whose inventory linked
// nic (one of its other NICs), or store.ErrNotFound when none did.
func (s *SQLite) MachineByNIC(ctx context.Context, nic fleet.MAC) (fleet.MAC, error) {
	select {
	case <-s.wr.quit:
		return fleet.MAC{}, ErrClosed
	default:
	}
	var owner string
	err := s.r.QueryRowContext(ctx, `SELECT machine FROM machine_nics WHERE mac = ?`, nic.String()).Scan(&owner)
	if errors.Is(err, sql.ErrNoRows) {
		return fleet.MAC{}, fmt.Errorf("NIC %s: %w", nic, store.ErrNotFound)
	}
	if err != nil {
		return fleet.MAC{}, s.dbError("looking up NIC "+nic.String(), err)
	}
	m, err := fleet.ParseMAC(owner)
	if err != nil {
		return fleet.MAC{}, fmt.Errorf("NIC %s: its stored machine: %w", nic, err)
	}
	return m, nil
}
