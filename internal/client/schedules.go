package client

import (
	"context"
	"net/http"
	"strconv"

	"github.com/btyproject/bty/internal/api"
)

// Schedules (docs/reference.md, "Schedules").

// Schedules lists every schedule, by id.
func (c *Client) Schedules(ctx context.Context) ([]api.Schedule, error) {
	var out []api.Schedule
	_, err := c.do(ctx, request{method: http.MethodGet, url: c.endpoint("schedules"), auth: true}, &out)
	if out == nil && err == nil {
		out = []api.Schedule{}
	}
	return out, err
}

// Schedule returns one schedule; an unknown id is a 404 *APIError.
func (c *Client) Schedule(ctx context.Context, id int64) (api.Schedule, error) {
	var out api.Schedule
	_, err := c.do(ctx, request{method: http.MethodGet, url: c.endpoint("schedules", strconv.FormatInt(id, 10)), auth: true}, &out)
	return out, err
}

// CreateSchedule creates a schedule; a bad field is a 400 *APIError
// naming it.
func (c *Client) CreateSchedule(ctx context.Context, u api.ScheduleUpdate) (api.Schedule, error) {
	var out api.Schedule
	_, err := c.do(ctx, request{method: http.MethodPost, url: c.endpoint("schedules"), body: u, auth: true}, &out)
	return out, err
}

// UpdateSchedule changes the fields u sets (pause, resume).
func (c *Client) UpdateSchedule(ctx context.Context, id int64, u api.ScheduleUpdate) (api.Schedule, error) {
	var out api.Schedule
	_, err := c.do(ctx, request{method: http.MethodPut, url: c.endpoint("schedules", strconv.FormatInt(id, 10)), body: u, auth: true}, &out)
	return out, err
}

// DeleteSchedule deletes a schedule; an unknown id is a 404 *APIError.
func (c *Client) DeleteSchedule(ctx context.Context, id int64) error {
	_, err := c.do(ctx, request{method: http.MethodDelete, url: c.endpoint("schedules", strconv.FormatInt(id, 10)), auth: true}, nil)
	return err
}
