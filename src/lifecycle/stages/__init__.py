"""The lifecycle stages. Each is a plain function: files in, files out, called by `lifecycle STAGE --task T`."""
