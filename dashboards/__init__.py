"""Web dashboard and cost reports; reads only through the warehouse query API."""
