"""Channel imports: customers and purchases from CSV and XLSX files, merged instead of duplicated."""
