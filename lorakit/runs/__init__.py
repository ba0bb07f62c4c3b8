"""The one run path of every task: a single run (`single`), a pack of K configurations on one base (`pack`), the memory
probe of a pack (`probe`). Sweep workers run these; so do the command-line scripts (`python -m lorakit`)."""
