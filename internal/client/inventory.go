package client

import (
	"context"
	"net/http"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/fleet"
)

// PXEInventory reports the machine's hardware (open route POST
// /pxe/{mac}/inventory, in the flash cycle whose token is cycle;
// docs/reference.md, "Inventory"): the server keeps it on the record,
// derives labels from it and links the machine's other NICs to it. A
// refused report is a 403 *APIError, one out of bounds a 400 or 413.
func (c *Client) PXEInventory(ctx context.Context, mac fleet.MAC, cycle string, inv fleet.Inventory) error {
	var st api.ReportStatus
	_, err := c.do(ctx, request{method: http.MethodPost, url: c.endpoint("pxe", mac.String(), "inventory"), header: cycleHeader(cycle),
		body: inv}, &st)
	return err
}
