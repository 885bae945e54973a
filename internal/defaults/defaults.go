// Package defaults fills in the zero fields of a Config: the one helper
// every component's constructor uses, so that "zero takes the default"
// means the same everywhere.
package defaults

// Set sets *p to def if *p is the zero value. A negative or otherwise
// invalid value is the caller's to refuse before, with the field's name.
func Set[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}
