package client

// SetMachinesPage sets how many machines c.Machines asks for per
// request, so a test can make a listing take many pages.
func SetMachinesPage(c *Client, n int) { c.machinesPage = n }
