"""Host-side builder: WinPE base discovery, boot.wim overlay, ISO/USB mastering."""
