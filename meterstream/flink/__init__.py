"""The Flink side: environment, DDL, UDFs, the workflow. The only package that imports pyflink."""
