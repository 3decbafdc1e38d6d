package client

import (
	"context"
	"net/http"
	"strconv"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/fleet"
)

// Failure recovery (docs/reference.md, "Failure recovery").

// ReportFailure says machine mac is bad (POST
// /machines/{mac}/report-failure): its recovery starts; the answer is
// the record.
func (c *Client) ReportFailure(ctx context.Context, mac fleet.MAC, reason string) (api.Machine, error) {
	var out api.Machine
	_, err := c.do(ctx, request{method: http.MethodPost, url: c.endpoint("machines", mac.String(), "report-failure"), auth: true,
		body: api.FailureReport{Reason: reason}}, &out)
	return out, err
}

// Clear takes machine mac out of quarantine and stops its recovery.
func (c *Client) Clear(ctx context.Context, mac fleet.MAC) (api.Machine, error) {
	var out api.Machine
	_, err := c.do(ctx, request{method: http.MethodPost, url: c.endpoint("machines", mac.String(), "clear"), auth: true}, &out)
	return out, err
}

// Actions returns one page of machine mac's automation history, newest
// first.
func (c *Client) Actions(ctx context.Context, mac fleet.MAC, limit, offset int) (api.ActionPage, error) {
	var out api.ActionPage
	u := c.endpoint("machines", mac.String(), "actions") + "?limit=" + strconv.Itoa(limit) + "&offset=" + strconv.Itoa(offset)
	_, err := c.do(ctx, request{method: http.MethodGet, url: u, auth: true}, &out)
	if out.Actions == nil && err == nil {
		out.Actions = []fleet.Action{}
	}
	return out, err
}
