package main

import "github.com/tandemhci/tandem/internal/units"

// parseSize reads a size in bytes; see units.ParseSize.
func parseSize(s string) (int64, error) { return units.ParseSize(s) }

// formatBytes prints n with a binary unit; see units.FormatBytes.
func formatBytes(n int64) string { return units.FormatBytes(n) }
