"""Task domains: how one step is asked, parsed strictly and applied."""
