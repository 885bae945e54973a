//go:build !linux

package main

// checkRoute reads the routing table over netlink, which is Linux's.
func checkRoute() (string, error) {
	return "", skipError{reason: "the route check reads Linux's routing table"}
}
