"""DNP3 master (dnp3py) and the substation RTU simulator; see README.md."""
