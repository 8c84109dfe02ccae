module github.com/meterstream/meterstream/clients/go

go 1.19
