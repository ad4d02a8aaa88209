"""Where samples come from: data embedded in installed packages, user folders, the landing zone."""
