// Package deb tests the Debian package that the script build (beside this
// file) makes with dpkg-deb: its contents and lintian (deb_test.go), the
// units under systemd-analyze verify, and the units under a real systemd
// in a Debian container booted with systemd-nspawn (systemd_linux_test.go).
// docs/debian.md describes the package. The tests are integration tests
// (nstest.Integration): they run under CI=true or
// TORGATE_TEST_INTEGRATION=1, and under CI a missing tool fails them.
package deb
