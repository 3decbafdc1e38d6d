package live

import (
	"context"

	"github.com/btyproject/bty/internal/client"
	"github.com/btyproject/bty/internal/fleet"
)

// reportInventory reports the machine's hardware to the server (POST
// /pxe/{mac}/inventory; docs/reference.md, "Inventory") on every boot
// with one, before anything else uses the flash cycle: best effort, a
// flash goes on without it.
func (s *system) reportInventory(ctx context.Context) {
	p := s.params
	if p.Server == "" || p.MAC.IsZero() || p.Cycle == "" {
		return
	}
	c, err := client.New(p.Server)
	if err != nil {
		return
	}
	inv, err := sendInventory(ctx, func(ctx context.Context, inv fleet.Inventory) error {
		return c.PXEInventory(ctx, p.MAC, p.Cycle, inv)
	}, "/")
	if err != nil {
		s.say("could not report the machine's inventory to %s: %v", p.Server, err)
		return
	}
	s.log.Info("inventory reported", "nics", len(inv.NICs), "disks", len(inv.Disks), "pci", len(inv.PCI), "firmware", inv.Firmware)
}
