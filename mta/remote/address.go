package remote

import "net/netip"

// isPublic reports whether ip is a global unicast address: one that a next
// hop found in DNS, or named by a recipient's address literal, may have.
// Anyone can publish an MX pointing at 127.0.0.1, 169.254.169.254 or
// 10.0.0.1 and have every local user who writes to that domain make us
// connect there; the rest of the network behind our firewall is no
// business of theirs. Internal next hops are named in Routes instead.
//
// The ranges are those the IANA special-purpose address registries
// (RFC 6890) mark as not globally reachable, plus IPv4-mapped, NAT64 and
// 6to4 forms of them, which reach the embedded IPv4 address.
func isPublic(ip netip.Addr) bool {
	ip = ip.Unmap()
	if ip.Zone() != "" || !ip.IsGlobalUnicast() || ip.IsPrivate() {
		// Unspecified, loopback, link-local, multicast, broadcast,
		// RFC 1918 and fc00::/7 (RFC 4193).
		return false
	}
	if ip.Is6() {
		if v4, ok := embeddedIPv4(ip); ok {
			return isPublic(v4)
		}
		// RFC 4291 2.4: global unicast is 2000::/3; the rest is reserved,
		// or deprecated (fec0::/10, ::/96), or discard-only (100::/64).
		if !netip.MustParsePrefix("2000::/3").Contains(ip) {
			return false
		}
	}
	for _, p := range notGloballyReachable() {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// notGloballyReachable lists the special-purpose ranges that
// netip.Addr's own predicates leave out.
func notGloballyReachable() []netip.Prefix {
	return []netip.Prefix{
		netip.MustParsePrefix("0.0.0.0/8"),       // "this network", RFC 791
		netip.MustParsePrefix("100.64.0.0/10"),   // shared address space (CGN), RFC 6598
		netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments, RFC 6890
		netip.MustParsePrefix("192.0.2.0/24"),    // documentation, RFC 5737
		netip.MustParsePrefix("192.88.99.0/24"),  // 6to4 relay anycast, RFC 7526
		netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking, RFC 2544
		netip.MustParsePrefix("198.51.100.0/24"), // documentation, RFC 5737
		netip.MustParsePrefix("203.0.113.0/24"),  // documentation, RFC 5737
		netip.MustParsePrefix("240.0.0.0/4"),     // reserved, RFC 1112
		netip.MustParsePrefix("2001::/23"),       // IETF protocol assignments (Teredo...), RFC 2928
		netip.MustParsePrefix("2001:db8::/32"),   // documentation, RFC 3849
		netip.MustParsePrefix("3fff::/20"),       // documentation, RFC 9637
	}
}

// embeddedIPv4 returns the IPv4 address an IPv6 address leads to: the
// well-known NAT64 prefix 64:ff9b::/96 (RFC 6052), its local-use
// neighbour 64:ff9b:1::/48 (RFC 8215), or 6to4's 2002::/16 (RFC 3056).
func embeddedIPv4(ip netip.Addr) (netip.Addr, bool) {
	b := ip.As16()
	switch {
	case netip.MustParsePrefix("64:ff9b::/96").Contains(ip):
		return netip.AddrFrom4([4]byte(b[12:16])), true
	case netip.MustParsePrefix("64:ff9b:1::/48").Contains(ip):
		// Local use only: never a public next hop, whatever it embeds.
		return netip.IPv4Unspecified(), true
	case netip.MustParsePrefix("2002::/16").Contains(ip):
		return netip.AddrFrom4([4]byte(b[2:6])), true
	}
	return netip.Addr{}, false
}
