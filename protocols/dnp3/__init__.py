"""DNP3 master (opendnp3, from the yadnp3 wheel) and the substation RTU simulator; see README.md."""
