package client

import (
	"context"
	"net/http"

	"github.com/btyproject/bty/internal/api"
)

// Bulk runs one action on every machine req's selector picks (POST
// /machines/bulk; docs/reference.md, "Labels and selectors").
func (c *Client) Bulk(ctx context.Context, req api.BulkRequest) (api.BulkResult, error) {
	var out api.BulkResult
	_, err := c.do(ctx, request{method: http.MethodPost, url: c.endpoint("machines", "bulk"), auth: true, body: req}, &out)
	return out, err
}
